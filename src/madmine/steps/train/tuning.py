"""The learning-rate grid as Ray Tune trials, each one a Ray Train TorchTrainer run.

Ray 2.60 runs Ray Train "V2": a trainer is no longer passed to a Tuner; each Tune trial runs
a small driver function that builds the TorchTrainer for its learning rate and forwards
every epoch's report to Tune (TuneReportCallback). param_space keeps the familiar shape,
{"train_loop_config": {"lr": grid_search([...])}}.

Resuming, at two levels:
- a killed worker: Ray Train restarts the worker group (FailureConfig(max_failures)) and the
  loop restores the newest checkpoint;
- a killed driver: the next run of the round restores the Tune experiment (Tuner.restore),
  finished trials are kept, and each unfinished one starts a Train run under the same name
  and storage path, which Ray Train resumes from its newest checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import logging

import ray.train
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from madmine.config import FinetuneConfig
from madmine.errors import MadmineError
from madmine.ray_cluster import quiet_logs
from madmine.steps.train.loop import train_loop
from madmine.steps.train.plan import Plan, trial_name
from madmine.steps.train.storage import RoundStorage

quiet_logs()  # importing Ray Data or Tune re-applied their INFO logging

log = logging.getLogger(__name__)

# A trial's driver only waits for its Train run; its workers hold the real resources.
DRIVER_CPUS = 0.01


class TrainingFailed(MadmineError):
    """A trial failed beyond its retries."""


def _trial(config: dict, plan: dict, storage_options: dict, storage: RoundStorage, settings: FinetuneConfig) -> None:
    """One Tune trial: the TorchTrainer run of one learning rate."""
    lr = float(config["train_loop_config"]["lr"])
    resources = {"CPU": settings.cpus_per_worker, **({"GPU": 1} if settings.use_gpu else {})}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"lr": lr, "plan": plan, "storage_options": storage_options},
        scaling_config=ray.train.ScalingConfig(
            num_workers=settings.num_workers, use_gpu=settings.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=trial_name(lr),
            storage_path=storage.trials,
            storage_filesystem=storage.pyarrow_fs(),
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=settings.keep_checkpoints),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def run_grid(
    plan: Plan, storage: RoundStorage, settings: FinetuneConfig, storage_options: dict, verbose: int = 1
) -> None:
    """Run (or continue) every learning rate of the grid; raises TrainingFailed when a trial failed."""
    trainable = tune.with_resources(
        tune.with_parameters(
            _trial, plan=plan.to_dict(), storage_options=storage_options, storage=storage, settings=settings
        ),
        {"cpu": DRIVER_CPUS},
    )
    fs = storage.pyarrow_fs()
    if tune.Tuner.can_restore(storage.tune, storage_filesystem=fs):
        log.warning("round %d: continuing the interrupted fine-tuning from its checkpoints", plan.round)
        tuner = tune.Tuner.restore(
            storage.tune, trainable, resume_unfinished=True, resume_errored=True, storage_filesystem=fs
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"train_loop_config": {"lr": tune.grid_search(list(plan.lr_grid))}},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=settings.concurrent_trials,
                trial_name_creator=lambda t: trial_name(t.config["train_loop_config"]["lr"]),
                trial_dirname_creator=lambda t: trial_name(t.config["train_loop_config"]["lr"]),
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=storage.root,
                storage_filesystem=fs,
                failure_config=tune.FailureConfig(max_failures=max(settings.max_failures, 0)),
                verbose=verbose,
            ),
        )
    # Tune prints its experiment table and a TensorBoard hint whatever the verbosity: library noise
    quiet = contextlib.redirect_stdout(io.StringIO()) if not verbose else contextlib.nullcontext()
    with quiet:
        results = tuner.fit()
    failed = [(r.config, r.error) for r in results if r.error]
    if failed:
        lines = "\n  ".join(
            f"lr {c['train_loop_config']['lr']:g}: {str(e).strip().splitlines()[-1][:300]}" for c, e in failed
        )
        raise TrainingFailed(
            f"round {plan.round}: {len(failed)} of {len(results)} trials failed:\n  {lines}\n"
            "fix the cause and re-run the same command: finished trials and checkpoints are kept"
        )
