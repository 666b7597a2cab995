"""`madmine finetune --round R`: check the data, run the lr grid on Ray, publish the winner.

1. collect S(..R), S(0), T(0) and decode every pair once (bad input fails here, before Ray);
2. write the plan and say it (steps, passes over S and S(0), lr x steps, batch norm, augmentations);
   a re-run of the round with the same plan continues, another plan is refused unless
   restart=True discards the round's checkpoints;
3. run the grid (Ray Tune over Ray Train), resuming whatever a killed run left;
4. read every trial's final checkpoint: the curves table, the winner among the checkpoints each
   trial kept (choice.py);
5. the winner's weights become a new target version (models table), with what it fixed and broke
   (repair table); the fit guard says when it still fails on most of the S it trained on;
   done.json is written last.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass

from madmine import tables
from madmine.config import Config
from madmine.errors import MadmineError
from madmine.lock import WorkspaceLock
from madmine.models.resolve import resolve
from madmine.ray_cluster import ensure_ray
from madmine.steps import repair
from madmine.steps.context import StepContext
from madmine.steps.train import data as training_data
from madmine.steps.train.curves import curves_table, read_outcomes
from madmine.steps.train.plan import Plan, make_plan
from madmine.steps.train.storage import RoundStorage
from madmine.steps.train.tuning import run_grid
from madmine.steps.train.versions import parent_of, pick_winner, publish
from madmine.workspace import Workspace

# One driver per round: a second `madmine finetune --round R` exits with the lock's message.
# A killed driver's lock is taken over at once on the same machine, else after this long.
LOCK_HEARTBEAT_S = 20.0
LOCK_STALE_AFTER_S = 120.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneResult:
    round: int
    model: str
    version: str
    parent_version: str
    weights_uri: str
    lr: float
    val_miou: float  # dataset mIoU on T(0) of the winner after its last epoch
    parent_val_miou: float  # the same, before fine-tuning
    trials: dict  # trial name (lr-<lr>) -> final val_miou
    data: str  # the counts of S, S(0), T(0)
    seconds: float
    already_done: bool = False
    selection: str = tables.MAD
    choose_by: str = "t0"  # how the lr was chosen ([finetune] choose_by)
    v_failures: float | None = None  # "validation": the winner's failures on V (the held-out part of S)
    parent_v_failures: float | None = None
    plan: str = ""  # what each trial did (Plan.describe)
    epoch: int | None = None  # the winner's kept epoch
    step: int | None = None  # ... after this many optimiser steps
    s_failures: float | None = None  # the winner's failures on the S it trained on (the fit guard's figure)
    parent_s_failures: float | None = None
    fit_warning: str | None = None  # one line when it did not fit S (s_failures > [finetune] fit_guard)
    repair: tuple[dict, ...] = ()  # its repair-table rows (V, S, T(0)) without created_at; repair.describe says them


def _check_plan(ws: Workspace, storage: RoundStorage, plan: Plan, restart: bool) -> None:
    if restart and ws.exists(storage.root):
        log.warning("round %d: --restart discards %s", plan.round, ws.url(storage.root))
        ws.remove(storage.root, recursive=True)
        ws.remove(tables.FINETUNE_CURVES.path(storage.workspace, round=storage.round, selection=storage.selection))
    if ws.exists(storage.plan):
        previous = ws.get_json(storage.plan)
        if previous.get("fingerprint") != plan.fingerprint():
            raise MadmineError(
                f"round {plan.round} was started with other data, weights or settings ({ws.url(storage.plan)}); "
                "re-run with --restart to discard its checkpoints and start over"
            )
    else:
        ws.put_json(storage.plan, {"fingerprint": plan.fingerprint(), "plan": plan.to_dict()})


@dataclass(frozen=True)
class FinetuneParams:
    """One fine-tuning round: which S chain it learns from, and whether to start over."""

    round: int
    selection: str = tables.MAD  # whose S(..R): MAD's, or a baseline's chain
    restart: bool = False  # discard this round's checkpoints and trials
    parent: str | None = None  # NAME@VERSION or NAME@STRATEGY: build on another chain's version (its S included)
    seed: int | None = None  # a replicate with this training seed, kept beside the chain as <selection>-seed<k>


def run(ctx: StepContext, params: FinetuneParams) -> FinetuneResult:
    """The fine-tuning step: the target on S(..R) + S(0) as a Ray Train job; the lr grid's winner becomes a
    new version of the target in `params.selection`'s chain. The plan is said (ctx.say) before training."""
    return finetune(ctx.config, params.round, ray_address=ctx.ray_address, restart=params.restart,
                    show_progress=ctx.show_progress, selection=params.selection, parent_text=params.parent,
                    seed=params.seed, say=ctx.say)


def fit_warning(s_failures: float | None, images: int, guard: float) -> str | None:
    """The fit guard: one line when the new version still fails on more than `guard` of the S it trained on."""
    if s_failures is None or s_failures != s_failures or s_failures <= guard:
        return None
    return (f"the new version still fails on {100 * s_failures:.0f}% of the {images} S images it trained on (more than "
            f"[finetune] fit_guard = {guard:g}): it did not fit S. Give it more updates ([finetune] steps or epochs, a "
            'higher lr_grid), or the recipe the target was trained with (optimizer = "adamw", batch_norm = "train" with '
            "batches of 8 or more, scale_range = [1.0, 1.0] if it never saw rescaling)")


def finetune(
    config: Config,
    round_: int,
    *,
    ray_address: str | None = None,
    restart: bool = False,
    show_progress: bool = True,
    selection: str = tables.MAD,
    parent_text: str | None = None,
    seed: int | None = None,
    say=None,
) -> FinetuneResult:
    """Fine-tune the target on S(..R) of a strategy and S(0); the winner of the lr grid becomes a new
    target version of that strategy's chain (MAD's by default). With `seed`, a replicate: the same
    round, data and parent with another training seed, kept as `<selection>-seed<k>` (its folder, its
    models row), never the chain's parent: how much one training run's noise moves the figures."""
    started = time.perf_counter()
    config = resolve(config)
    if round_ < 0:
        raise MadmineError(f"--round must be >= 0, got {round_}")
    if not selection or not selection.replace("_", "").replace("-", "").isalnum():
        raise MadmineError(f"--selection must name a strategy (letters, digits, - and _), got {selection!r}")
    chain = selection if seed is None else f"{selection}-seed{seed}"
    if seed is not None:
        config = dataclasses.replace(config, finetune=dataclasses.replace(config.finetune, seed=seed))
    ws = Workspace.from_config(config)
    start = parent_of(config, ws, round_, selection, parent_text)
    parent, parent_version = start.spec, start.version
    data = training_data.collect(config, ws, round_, selection, start.base)
    digest = training_data.check(data, config.num_classes, config.storage_options, show_progress=show_progress)
    plan = make_plan(config, round_, parent, parent_version, data, digest, chain)
    storage = RoundStorage(config.workspace_uri, dict(config.storage_options), round_, chain)

    def finished() -> FinetuneResult | None:
        done = None if restart else storage.markers.get("done")
        if done is not None and done.get("fingerprint") == plan.fingerprint():
            return FinetuneResult(**{**done["result"], "already_done": True})
        return None

    if (result := finished()) is not None:
        return result
    (say or log.info)(f"round {round_} fine-tuning plan: {plan.describe()}")
    with WorkspaceLock(ws, f"finetune-{storage.folder}", stale_after=LOCK_STALE_AFTER_S, heartbeat=LOCK_HEARTBEAT_S):
        if (result := finished()) is not None:  # another driver finished in between
            return result
        _check_plan(ws, storage, plan, restart)

        ensure_ray(ray_address)
        run_grid(plan, storage, config.finetune, dict(config.storage_options), verbose=1 if show_progress else 0)

        outcomes = read_outcomes(plan, storage)
        ws.write_parquet(tables.FINETUNE_CURVES.path(storage.workspace, round=storage.round, selection=chain),
                         curves_table(plan, outcomes))
        winner = pick_winner(outcomes, plan)
        row = publish(config, ws, plan, winner)
        result = FinetuneResult(
            round=round_,
            model=row["model"],
            version=row["model_version"],
            parent_version=parent_version,
            weights_uri=row["weights_uri"],
            lr=winner.lr,
            val_miou=winner.val_miou,
            parent_val_miou=float(winner.parent["val_miou"]),
            trials={o.trial: o.val_miou for o in outcomes},
            data=data.counts() + (f", V {len(plan.v)} (held out of S to choose the lr)" if plan.v else ""),
            seconds=time.perf_counter() - started,
            selection=chain,
            choose_by=plan.choose_by,
            v_failures=winner.v_failures,
            parent_v_failures=winner.parent.get("v_failures"),
            plan=plan.describe(),
            epoch=winner.epoch,
            step=winner.point.get("step"),
            s_failures=winner.s_failures,
            parent_s_failures=winner.parent.get("s_failures"),
            fit_warning=fit_warning(winner.s_failures, len(plan.s), plan.fit_guard),
            repair=tuple({k: v for k, v in r.items() if k != "created_at"}
                         for r in repair.finetune_rows(row, winner.images, plan.tau)),
        )
        storage.markers.mark_done("done", {"fingerprint": plan.fingerprint(), "result": json.loads(json.dumps(result.__dict__, default=str))})
    return result
