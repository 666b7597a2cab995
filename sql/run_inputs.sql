-- The scored run that selection reads: its committed shard files, listed by madmine and
-- bound as variables (predictions_files, pairs_files), and only rows of that run.

CREATE OR REPLACE TEMP VIEW run_predictions AS
SELECT
    image_id, model, role, height, width, class_pixels, mean_entropy, mean_msp,
    parse_filename(filename, true) AS shard  -- the shard file, also the map-store pack
FROM read_parquet(getvariable('predictions_files'), filename = true)
WHERE run_id = getvariable('run_id');

CREATE OR REPLACE TEMP VIEW run_pairs AS
SELECT image_id, competitor, d
FROM read_parquet(getvariable('pairs_files'))
WHERE run_id = getvariable('run_id');

-- One perceptual hash and one shard per image: the same bytes ingested from two places
-- share an image_id, and must not enter a ranking twice. URIs are looked up only for the
-- images a selection keeps (candidates.sql): held for every image, they cost gigabytes at
-- 10M images.
CREATE OR REPLACE TEMP TABLE run_images AS
SELECT scored.image_id, min(manifest.phash) AS phash, min(scored.shard) AS shard
FROM (SELECT image_id, shard FROM run_predictions WHERE role = 'target') AS scored
LEFT JOIN manifest USING (image_id)
GROUP BY scored.image_id;
