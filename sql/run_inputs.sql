-- The scored run that selection reads: its committed shard files, listed by madmine and
-- bound as variables (predictions_files, pairs_files), and only rows of that run.

CREATE OR REPLACE TEMP VIEW run_predictions AS
SELECT
    image_id, model, role, height, width, class_pixels, mean_entropy, mean_msp,
    regexp_extract(filename, '([^/]+)\.parquet$', 1) AS shard  -- the shard file, also the map-store pack
FROM read_parquet(getvariable('predictions_files'), filename = true)
WHERE run_id = getvariable('run_id');

CREATE OR REPLACE TEMP VIEW run_pairs AS
SELECT image_id, competitor, d
FROM read_parquet(getvariable('pairs_files'))
WHERE run_id = getvariable('run_id');

-- One uri, one perceptual hash and one shard per image: the same bytes ingested from two
-- places share an image_id, and must not enter a ranking twice.
CREATE OR REPLACE TEMP TABLE run_images AS
WITH scored AS (
    SELECT image_id, min(shard) AS shard FROM run_predictions WHERE role = 'target' GROUP BY image_id
),
described AS (
    SELECT image_id, min(uri) AS uri, min(phash) AS phash
    FROM manifest
    GROUP BY image_id
)
SELECT scored.image_id, described.uri, described.phash, scored.shard
FROM scored LEFT JOIN described USING (image_id);
