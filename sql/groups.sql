-- The partition (step 2 of the method, docs/paper.md). For competitor j and direction 'target', image x
-- is in group k when the target's map has class k (k >= 1: never background) with an area
-- fraction pixels_k / (h * w) inside [p_k, q_k], inclusive; direction 'competitor' uses
-- g_j's own map. Each member carries d(target, g_j); images with NULL d never rank, nor do
-- excluded images, nor classes without bounds.
-- Variables: class_ids (the classes that form groups).

CREATE OR REPLACE TEMP VIEW groups AS
WITH size_bounds AS (
    SELECT class_id, p, q
    FROM bounds
    WHERE class_id >= 1
      AND p IS NOT NULL AND q IS NOT NULL
      AND list_contains(getvariable('class_ids'), class_id)
),
eligible_predictions AS (
    SELECT image_id, model, role, height, width, class_pixels
    FROM run_predictions
    ANTI JOIN exclusions USING (image_id)
),
-- One row per (image, model, class) whose predicted fraction lies inside the bounds; a
-- direct list_extract per bounded class is cheaper than unnesting the whole list.
fractions_in_bounds AS (
    SELECT
        eligible_predictions.image_id,
        eligible_predictions.model,
        eligible_predictions.role,
        size_bounds.class_id,
        eligible_predictions.class_pixels[size_bounds.class_id + 1]
            / (eligible_predictions.height::BIGINT * eligible_predictions.width) AS class_fraction
    FROM eligible_predictions CROSS JOIN size_bounds
    WHERE eligible_predictions.class_pixels[size_bounds.class_id + 1] > 0
      AND class_fraction BETWEEN size_bounds.p AND size_bounds.q
),
discrepancies AS (
    SELECT image_id, competitor, d
    FROM run_pairs
    WHERE d IS NOT NULL
),
by_target_map AS (
    SELECT discrepancies.competitor, 'target' AS direction, fractions_in_bounds.class_id,
           fractions_in_bounds.image_id, fractions_in_bounds.class_fraction, discrepancies.d
    FROM fractions_in_bounds
    JOIN discrepancies USING (image_id)
    WHERE fractions_in_bounds.role = 'target'
),
by_competitor_map AS (
    SELECT discrepancies.competitor, 'competitor' AS direction, fractions_in_bounds.class_id,
           fractions_in_bounds.image_id, fractions_in_bounds.class_fraction, discrepancies.d
    FROM fractions_in_bounds
    JOIN discrepancies
      ON discrepancies.image_id = fractions_in_bounds.image_id
     AND discrepancies.competitor = fractions_in_bounds.model
    WHERE fractions_in_bounds.role = 'competitor'
)
SELECT * FROM by_target_map
UNION ALL
SELECT * FROM by_competitor_map;
