-- Ingest's plan, first pass: the listed URIs, the manifest's and the earlier errors' URIs,
-- each split into `buckets` files by a hash of the URI (run with bound parameters: the
-- folders and the bucket count). A URI and every copy of it land in the same bucket, so the
-- join of ingest_plan.sql runs a bucket at a time, in memory that does not grow with the corpus.
-- Views: manifest, ingest_errors (uri).

COPY (SELECT uri, hash(uri) % $buckets AS bucket FROM read_parquet($listing_file))
TO $listed_folder (FORMAT parquet, PARTITION_BY (bucket));

COPY (SELECT uri, hash(uri) % $buckets AS bucket FROM manifest)
TO $known_folder (FORMAT parquet, PARTITION_BY (bucket));

COPY (SELECT uri, hash(uri) % $buckets AS bucket FROM ingest_errors)
TO $failed_folder (FORMAT parquet, PARTITION_BY (bucket));
