"""The steps of the method (docs/paper.md), one module or folder each, in the order a round
runs them:

    ingest      files, folders, s3:// prefixes -> the manifest
    score/      every model on every image -> predictions, pairs, errors (Ray Data)
    bounds      size quartiles per class from the labelled training set
    select      per-class top-n3 by discrepancy -> candidates M (DuckDB, sql/*.sql)
    rating/     raters score M in a web app; S = the lowest mean opinion scores
    annotation/ S and test sets out to annotation tools, pixel labels back in
    train/      fine-tune the target on S(..R) + S(0) as a Ray Train job
    evaluation/ test sets, Table 1, MAD competitions, selection quality
    report/     one HTML page per round

Each step owns its tables through madmine.tables; madmine.pipeline strings them into rounds
and nightly runs; madmine.cli gives each a command.
"""
