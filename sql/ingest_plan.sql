-- Ingest's plan: which listed URIs are new. A listing may name a URI twice; a URI the
-- manifest holds is known and never read again; one that failed an earlier ingest is
-- skipped unless retry_errors (a nightly run would otherwise record the same broken files
-- every night). A join, not sets in memory: DuckDB spills what passes its memory limit.
-- Variables: listing_file, retry_errors. Views: manifest, ingest_errors (uri).

CREATE OR REPLACE TEMP TABLE listed_uris AS
WITH listed AS (
    SELECT DISTINCT uri FROM read_parquet(getvariable('listing_file'))
),
known AS (
    SELECT DISTINCT uri FROM manifest
),
failed AS (
    SELECT DISTINCT uri FROM ingest_errors WHERE NOT getvariable('retry_errors')
)
SELECT
    listed.uri,
    CASE WHEN known.uri IS NOT NULL THEN 'known'
         WHEN failed.uri IS NOT NULL THEN 'failed_before'
         ELSE 'new' END AS status
FROM listed
LEFT JOIN known USING (uri)
LEFT JOIN failed USING (uri);

-- the new URIs, in order: the shards of the ingest
SELECT uri FROM listed_uris WHERE status = 'new' ORDER BY uri;
