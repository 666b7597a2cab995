-- Rows of an ingest's staged parts that must not enter the manifest: an image the manifest
-- already holds, or another copy of the same bytes staged by another shard (the smallest URI
-- stays, as within a shard). Usually few rows: the driver rewrites only the parts they are in.
-- Variables: staged_files. Views: manifest.

WITH staged AS (
    SELECT parse_filename(filename, true) AS shard, image_id, uri
    FROM read_parquet(getvariable('staged_files'), filename = true)
),
repeated AS (
    SELECT image_id, min(uri) AS first_uri
    FROM staged
    GROUP BY image_id
    HAVING count(*) > 1
)
SELECT staged.shard, staged.image_id
FROM staged JOIN repeated USING (image_id)
WHERE staged.uri > repeated.first_uri
UNION
SELECT shard, image_id
FROM staged SEMI JOIN manifest USING (image_id);
