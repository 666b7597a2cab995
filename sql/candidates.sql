-- M with provenance: one row per (image, group) it was kept in, in a stable order; for the
-- hybrid strategy `score` is the predicted failure probability that ranked the group.
-- Variables: round, run_id, strategy ('mad' or 'hybrid'), class_names (index = class id).

SELECT
    getvariable('round')::INTEGER AS round,
    ranked.image_id,
    run_images.uri,
    ranked.competitor,
    ranked.direction,
    ranked.class_id::INTEGER AS class_id,
    getvariable('class_names')[ranked.class_id + 1] AS class_name,
    ranked.class_fraction,
    ranked.d,
    ranked.rank::INTEGER AS rank,
    getvariable('strategy') AS strategy,
    getvariable('run_id') AS run_id,
    ranked.score,
    run_images.shard
FROM ranked
LEFT JOIN run_images USING (image_id)
ORDER BY ranked.competitor, ranked.direction, ranked.class_id, ranked.rank;
