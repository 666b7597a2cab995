-- Ingest's plan, a bucket at a time (ingest_buckets.sql): which listed URIs are new. A
-- listing may name a URI twice; a URI the manifest holds is known and never read again; one
-- that failed an earlier ingest is skipped unless retry_errors (a nightly run would otherwise
-- record the same broken files every night). A join, not sets in memory.
-- Variables: retry_errors. Views: listed_uris, known_uris, failed_uris (uri each: the bucket's).

CREATE OR REPLACE TEMP TABLE classified AS
WITH listed AS (
    SELECT DISTINCT uri FROM listed_uris
),
known AS (
    SELECT DISTINCT uri FROM known_uris
),
failed AS (
    SELECT DISTINCT uri FROM failed_uris WHERE NOT getvariable('retry_errors')
)
SELECT
    listed.uri,
    CASE WHEN known.uri IS NOT NULL THEN 'known'
         WHEN failed.uri IS NOT NULL THEN 'failed_before'
         ELSE 'new' END AS status
FROM listed
LEFT JOIN known USING (uri)
LEFT JOIN failed USING (uri);

-- the bucket's new URIs, in order
SELECT uri FROM classified WHERE status = 'new' ORDER BY uri;
