-- A baseline's picks in the candidates shape: one group per strategy, ranked 1..budget.
-- direction is 'target' and class_id the main object class of the target's map (the
-- class with most pixels, k >= 1, smallest id on ties; NULL when the map is all
-- background), so that per-class counts and test-set quotas read the same as for MAD.
-- There is no competitor and no discrepancy: both are NULL.
-- Variables: round, run_id, strategy, class_names (index = class id).

WITH target_maps AS (
    SELECT image_id, height::BIGINT * width AS area, class_pixels[2:] AS object_pixels
    FROM run_predictions
    SEMI JOIN baseline_ranked USING (image_id)
    WHERE role = 'target'
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
    baseline_ranked.image_id,
    run_images.uri,
    NULL::VARCHAR AS competitor,
    'target' AS direction,
    main_class.class_id::INTEGER AS class_id,
    getvariable('class_names')[main_class.class_id + 1] AS class_name,
    CASE WHEN main_class.class_id IS NOT NULL THEN main_class.class_fraction END AS class_fraction,
    NULL::DOUBLE AS d,
    baseline_ranked.rank::INTEGER AS rank,
    getvariable('strategy') AS strategy,
    getvariable('run_id') AS run_id,
    baseline_ranked.score,
    run_images.shard
FROM baseline_ranked
LEFT JOIN main_class USING (image_id)
LEFT JOIN run_images USING (image_id)
ORDER BY baseline_ranked.rank;
