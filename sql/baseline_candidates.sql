-- A baseline's picks in the candidates shape: one group per strategy, ranked 1..budget.
-- direction is 'target' and class_id the main object class of the target's map (the
-- class with most pixels, k >= 1, smallest id on ties; NULL when the map is all
-- background), so that per-class counts and test-set quotas read the same as for MAD.
-- There is no competitor and no discrepancy: both are NULL.
-- Variables: round, run_id, strategy, class_names (index = class id).

WITH picked AS MATERIALIZED (
    SELECT * FROM baseline_ranked
),
target_maps AS (
    SELECT image_id, height::BIGINT * width AS area, class_pixels[2:] AS object_pixels
    FROM run_predictions
    SEMI JOIN picked USING (image_id)
    WHERE role = 'target'
),
picked_uris AS (
    SELECT image_id, min(uri) AS uri
    FROM manifest SEMI JOIN picked USING (image_id)
    GROUP BY image_id
),
main_class AS (
    SELECT
        image_id,
        CASE WHEN list_max(object_pixels) > 0
             THEN list_position(object_pixels, list_max(object_pixels)) END AS class_id,
        list_max(object_pixels) / area AS class_fraction
    FROM target_maps
)
SELECT
    getvariable('round')::INTEGER AS round,
    picked.image_id,
    picked_uris.uri,
    NULL::VARCHAR AS competitor,
    'target' AS direction,
    main_class.class_id::INTEGER AS class_id,
    getvariable('class_names')[main_class.class_id + 1] AS class_name,
    CASE WHEN main_class.class_id IS NOT NULL THEN main_class.class_fraction END AS class_fraction,
    NULL::DOUBLE AS d,
    picked.rank::INTEGER AS rank,
    getvariable('strategy') AS strategy,
    getvariable('run_id') AS run_id,
    picked.score,
    run_images.shard
FROM picked
LEFT JOIN main_class USING (image_id)
LEFT JOIN picked_uris USING (image_id)
LEFT JOIN run_images USING (image_id)
ORDER BY picked.rank;
