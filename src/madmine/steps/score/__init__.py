"""Scoring (step 1 of the method, docs/paper.md): the manifest, in shards, through pure stages into Parquet.

    context.py   what a scorer needs (models, versions, workspace), picklable for actors
    decode.py    stage: fetch and decode bytes into each model's input size
    predict.py   stage: every model on a decoded batch; maps summarised per image and pair
    executors/   where the stages run: in this process, or as a Ray Data pipeline
    shards.py    shard planning and the shard commit (tables, then the marker)
    run.py       `score(config)`: the whole step, resumable shard by shard
    map_store.py every model version's prediction maps, for scoring and every reader
    runs.py      what each scoring run is and how far it got

The package itself imports nothing: readers of the map store (the rating app, reports)
must not pay for torch and Ray Data, which `run` needs.
"""
