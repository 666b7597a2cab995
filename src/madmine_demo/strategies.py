"""The strategies the demo compares with MAD, through the commands' own entry points, in the demo's one
workspace: `select --strategy`, `rate select --strategy`, `annotate export` and `import`, and
`finetune --selection` (with `--parent` where a strategy builds on MAD's chain, `--seed` for the
replicates), exactly as a user runs them. Nothing here orders, copies or labels images its own way.

Every strategy gets MAD's budget: its M as many images as MAD's M (the baselines' and learned's
shape), its S n4 images, labelled and fine-tuned on like MAD's S.

- The paper's baselines (entropy, random) run in every round, each on its own chain: round R's
  selection comes from the run that scored its own newest target (`score --selection NAME`, with
  the competitors' maps from the cache), and it fine-tunes its own previous version.
- The learned strategies (learned, hybrid) exist from round 1, fitted on MAD's ratings of earlier
  rounds: they extend MAD's chain (`--parent target@mad`) and select from MAD's round-R run, so that
  they and MAD's round R start from the same target and differ only in the images they pick.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from madmine import tables
from madmine.steps import select
from madmine.steps.annotation.exchange import ExportParams, run_export
from madmine.steps.context import StepContext
from madmine.steps.rating import choose
from madmine.steps.score import run as scoring
from madmine_demo.people.annotator import label_and_import
from madmine_demo.world.truth import Truth

BASELINES = ("entropy", "random")
LEARNED = ("learned", "hybrid")
BUILDS_ON_MAD = LEARNED  # fitted on MAD's ratings: they fine-tune MAD's chain


def compared(round_: int) -> tuple[str, ...]:
    """The strategies compared with MAD in a round (the learned ones need an earlier round's ratings)."""
    return BASELINES + (LEARNED if round_ >= 1 else ())


@dataclass
class Picked:
    strategy: str
    round: int
    run_id: str
    result: object  # select.SelectResult


def pick(ctx: StepContext, round_: int, strategy: str, mad_run_id: str) -> Picked:
    """The strategy's candidates of round R, before the round's ratings (what MAD's M saw): from MAD's run for
    round 0 (one target) and for the learned strategies, else from the run of the strategy's own newest target."""
    run_id = mad_run_id
    if round_ > 0 and strategy not in BUILDS_ON_MAD:
        run_id = scoring.run(ctx, scoring.ScoreParams(selection=strategy)).run_id
    result = select.run(ctx, select.SelectParams(round_, strategy=strategy, run_id=run_id))
    return Picked(strategy, round_, run_id, result)


def label_s(ctx: StepContext, round_: int, strategy: str, truth: Truth, folder: Path) -> choose.ChooseResult:
    """`rate select --strategy NAME` (its own top n4 of what the round's test set leaves), then its S out to the
    simulated annotator and back through `annotate import`."""
    chosen = choose.run(ctx, choose.ChooseParams.from_config(ctx.config, round_, strategy=strategy))
    if not folder.exists():
        run_export(ctx, ExportParams("coco", folder, round_, "s", strategy))
    label_and_import(ctx.ws, ctx.config, folder, truth)
    return chosen


def parent_of(strategy: str, round_: int, target: str) -> str | None:
    """What `finetune --parent` names for the strategy: MAD's newest version for the learned ones."""
    return f"{target}@{tables.MAD}" if strategy in BUILDS_ON_MAD and round_ > 0 else None


def finetune(ctx: StepContext, round_: int, strategy: str, seed: int | None = None):
    """`finetune --round R --selection NAME [--parent target@mad] [--seed K]`; the FinetuneResult."""
    from madmine.steps.train import run as training  # Ray Train: imported when a fine-tuning runs

    params = training.FinetuneParams(round_, selection=strategy, parent=parent_of(strategy, round_, ctx.config.target.name),
                                     seed=seed)
    return training.run(ctx, params)
