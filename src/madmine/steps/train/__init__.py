"""Fine-tuning the target on its found failures (ARCHITECTURE §1 step 5) as a Ray Train job.

Modules, one job each:
    data.py        S(..R), S(0), T(0) as (image, label) pairs, checked before any training
    augment.py     random scale / crop / flip with the scoring normalisation (pure numpy)
    sampling.py    which items each step of each worker sees; the poly schedule (pure)
    plan.py        everything a trial needs, JSON-serialisable, with a fingerprint for resume
    loop.py        the Ray Train worker function: train, validate on T(0), checkpoint each epoch
    checkpoints.py what a checkpoint holds and how it is read back
    tuning.py      the lr grid as Ray Tune trials over TorchTrainer runs, resumable
    versions.py    the winner as a new target version in the `models` table
    curves.py      every trial's learning curve as tables/finetune_curves/round-<R>.parquet
    run.py         `finetune(config, round)`: the whole step
"""

from madmine.steps.train.data import DataError

__all__ = ["DataError", "finetune"]


def finetune(*args, **kwargs):
    """See madmine.steps.train.run.finetune. Imported when called: Ray Train takes about 6.5 s to
    import, which readers of this package (evaluation reads train.data) must not pay."""
    from madmine.steps.train.run import finetune as run

    return run(*args, **kwargs)
