"""Fine-tuning the target on its found failures (step 5 of the method, docs/paper.md) as a Ray Train job.

Modules, one job each:
    data.py        S(..R), S(0), T(0) as (image, label) pairs, checked before any training
    augment.py     random scale / crop / flip with the scoring normalisation (pure numpy)
    sampling.py    which items each step of each worker sees; the poly schedule (pure)
    plan.py        everything a trial needs, JSON-serialisable, with a fingerprint for resume
    loop.py        the Ray Train worker function: train, validate on T(0), checkpoint each epoch
    checkpoints.py what a checkpoint holds and how it is read back
    tuning.py      the lr grid as Ray Tune trials over TorchTrainer runs, resumable
    versions.py    the winner as a new target version in the `models` table
    curves.py      every trial's learning curve as tables/finetune_curves/round-<R>-<strategy>.parquet
    run.py         the step's entry point, `run(ctx, FinetuneParams(round))`

The package itself imports nothing: Ray Train takes about 6.5 s to import, which readers of
train.data and train.versions (evaluation, scoring) must not pay.
"""
