-- Views over every table of a madmine workspace, for ad-hoc questions.
--
-- madmine runs this file itself (`madmine sql`). In the plain duckdb CLI, set the
-- workspace root first (a local folder; s3://bucket/prefix where the CLI has httpfs):
--
--   duckdb -cmd ".bail off" -cmd "SET VARIABLE workspace = 'work'" -cmd ".read sql/views.sql"
--
-- A view whose table does not exist yet fails to create ("No files found"); with
-- .bail off the CLI reports it and creates the others. madmine creates only the views of
-- tables that exist. Files whose name starts with '.' are temporaries of an atomic write.

-- Shards of scoring runs that are complete: runs/<run_id>/shards/<shard>.json exists.
CREATE OR REPLACE VIEW committed_shards AS
SELECT
    regexp_extract(file, '/runs/([^/]+)/shards/[^/]+\.json$', 1) AS run_id,
    regexp_extract(file, '/shards/([^/]+)\.json$', 1) AS shard
FROM glob(getvariable('workspace') || '/runs/*/shards/[!.]*.json');

-- A run table (tables/<name>/<run_id>/<shard>.parquet) restricted to committed shards;
-- ingest runs (run ids 'ingest*') write whole files and have no shards.
CREATE OR REPLACE MACRO committed_run_table(name) AS TABLE
WITH shard_files AS (
    SELECT
        *,
        regexp_extract(filename, '([^/]+)/[^/]+\.parquet$', 1) AS file_run,
        regexp_extract(filename, '([^/]+)\.parquet$', 1) AS file_shard
    FROM read_parquet(getvariable('workspace') || '/tables/' || name || '/*/[!.]*.parquet',
                      filename = true, union_by_name = true)
)
SELECT * EXCLUDE (filename, file_run, file_shard)
FROM shard_files
WHERE file_run LIKE 'ingest%'
   OR (file_run, file_shard) IN (SELECT (run_id, shard) FROM committed_shards);

CREATE OR REPLACE VIEW manifest AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/manifest/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW predictions AS
SELECT * FROM committed_run_table('predictions');

CREATE OR REPLACE VIEW pairs AS
SELECT * FROM committed_run_table('pairs');

CREATE OR REPLACE VIEW errors AS
SELECT * FROM committed_run_table('errors');

CREATE OR REPLACE VIEW bounds AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/bounds/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW candidates AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/candidates/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW ratings AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/ratings/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW selected AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/selected/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW labels AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/labels/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW testsets AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/testsets/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW models AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/models/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW finetune_curves AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/finetune_curves/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW evaluation AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/evaluation/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW evaluation_images AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/evaluation_images/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW selection_quality AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/selection_quality/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW competitions AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/competitions/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW competition_results AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/competition_results/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW sample AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/sample/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW selectors AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/selectors/[!.]*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW repair AS
SELECT * FROM read_parquet(getvariable('workspace') || '/tables/repair/[!.]*.parquet', union_by_name = true);
