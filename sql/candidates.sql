-- M with provenance: one row per (image, group) it was kept in, in a stable order; for the
-- hybrid strategy `score` is the predicted failure probability that ranked the group.
-- Variables: round, run_id, strategy ('mad' or 'hybrid'), class_names (index = class id).

WITH kept AS MATERIALIZED (
    SELECT * FROM ranked
),
kept_uris AS (
    SELECT image_id, min(uri) AS uri
    FROM manifest SEMI JOIN kept USING (image_id)
    GROUP BY image_id
)
SELECT
    getvariable('round')::INTEGER AS round,
    kept.image_id,
    kept_uris.uri,
    kept.competitor,
    kept.direction,
    kept.class_id::INTEGER AS class_id,
    getvariable('class_names')[kept.class_id + 1] AS class_name,
    kept.class_fraction,
    kept.d,
    kept.rank::INTEGER AS rank,
    getvariable('strategy') AS strategy,
    getvariable('run_id') AS run_id,
    kept.score,
    run_images.shard
FROM kept
LEFT JOIN kept_uris USING (image_id)
LEFT JOIN run_images USING (image_id)
ORDER BY kept.competitor, kept.direction, kept.class_id, kept.rank;
