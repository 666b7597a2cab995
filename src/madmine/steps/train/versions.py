"""Model versions: the winner of a round becomes a new target version in the `models` table.

Its weights are the final checkpoint's state_dict (the library model's own: torchvision's,
the factory's, the Hugging Face model's, smp's), copied to models/<name>/<version>.pt, so
that the config's entry (arch, factory, hf checkpoint or smp architecture) plus
`weights = <that file>` builds it; the version is computed the way
madmine.models.registry.model_version names any weights file (<prefix>-<sha256[:12] of the
file>, then -cm<hash> with a class map), so scoring finds the same version either way.

tables/models/<name>-round-<R>-<selection>.parquet (one part per fine-tuned round and
strategy; re-running a round replaces its part; its repair rows, what it fixed and broke on V,
the S it trained on and T(0), are written just before it): model, model_version, role, arch,
weights_uri, parent_version, created_at, round, metrics (JSON), checkpoint_uri, val_miou, lr,
factory, selection (the strategy whose S it learned from; null in older parts means mad).

Each strategy is a chain of its own: round R of `--selection entropy` fine-tunes the entropy
version of round R - 1. Everything that asks for "the newest target" (score, round, nightly)
follows MAD's chain unless told otherwise, so a baseline never becomes the target MAD
troubleshoots.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from madmine import tables
from madmine.config import Config, ModelSpec
from madmine.errors import MadmineError
from madmine.models.kinds import kind_of
from madmine.models.registry import model_version, version_from_weights
from madmine.steps import repair
from madmine.steps.train import choice
from madmine.steps.train.curves import Outcome
from madmine.steps.train.plan import Plan
from madmine.workspace import Workspace


def pick_winner(outcomes: list[Outcome], plan: Plan | None = None) -> Outcome:
    """The trial whose kept checkpoint wins by the plan's rule (choice.py): the highest T(0) mIoU (choose_by =
    "t0", the paper's), or the fewest failures on V within max_t0_drop of the parent's T(0) ("validation");
    a tie goes to the smaller learning rate (the gentler change)."""
    usable = [o for o in outcomes if o.val_miou == o.val_miou]  # NaN: T(0) held no labelled pixel
    if not usable:
        raise MadmineError("no trial has a finite mIoU on T(0): does T(0) hold labelled pixels?")
    choose_by, bound = (plan.choose_by, plan.max_t0_drop) if plan is not None else ("t0", 0.0)
    return min(usable, key=lambda o: (choice.key(o.point, o.parent, choose_by, bound), o.lr))


def version_of(spec: ModelSpec, weights: bytes, classes=None) -> str:
    """registry.model_version of a weights file with these bytes, without reading it back."""
    return version_from_weights(spec, weights, classes)


def models_rows(ws: Workspace) -> list[dict]:
    rows: list[dict] = []
    for path in tables.MODELS.files(ws):
        rows.extend(ws.read_parquet([path]).to_pylist())
    return rows


def selection_of(row: dict) -> str:
    """The strategy a models-table row was trained on; rows written before the column: mad."""
    return row.get("selection") or tables.MAD


def latest_row(ws: Workspace, model: str, before_round: int | None = None, selection: str = tables.MAD) -> dict | None:
    """The newest fine-tuned version of a model in one strategy's chain (highest round, then newest),
    optionally before a round."""
    rows = [
        r
        for r in models_rows(ws)
        if r.get("model") == model
        and r.get("weights_uri")
        and selection_of(r) == selection
        and (before_round is None or (r.get("round") or 0) < before_round)
    ]
    if not rows:
        return None
    return max(rows, key=lambda r: (r.get("round") or 0, str(r.get("created_at"))))


def spec_of(config: Config, row: dict) -> ModelSpec:
    """The config's model entry with the row's weights: how a table version is built."""
    return dataclasses.replace(config.model(row["model"]), weights=row["weights_uri"], version=None)


@dataclass(frozen=True)
class Parent:
    """The version round R fine-tunes, and whose S it learned from (its chain's strategy and its round)."""

    spec: ModelSpec
    version: str
    base: tuple[str, int] | None = None  # (strategy, round) of the models-table row; None: the config's target


def parent_row(config: Config, ws: Workspace, round_: int, text: str) -> dict:
    """The models-table row `--parent` names: NAME@VERSION, or NAME@STRATEGY (that chain's newest version
    fine-tuned before round R), as `compete` and `evaluate` name models."""
    name, _, which = text.partition("@")
    if name != config.target.name or not which:
        raise MadmineError(f"--parent must name a version of the target {config.target.name!r} as "
                           f"{config.target.name}@VERSION or {config.target.name}@STRATEGY, got {text!r}")
    if which in tables.STRATEGIES:
        row = latest_row(ws, name, round_, which)
    else:
        row = next((r for r in models_rows(ws) if r.get("model") == name and r.get("model_version") == which), None)
    if row is None or not row.get("weights_uri"):
        raise MadmineError(f"--parent {text}: no fine-tuned version of {name!r} of a round before {round_} answers to "
                           f"{which!r}; fine-tune that chain first (`madmine finetune --selection STRATEGY`)")
    if (row.get("round") or 0) >= round_:
        raise MadmineError(f"--parent {text} was fine-tuned in round {row.get('round')}: a parent comes from an earlier "
                           f"round than {round_}")
    return row


def parent_of(config: Config, ws: Workspace, round_: int, selection: str = tables.MAD, parent: str | None = None) -> Parent:
    """What round R fine-tunes: the version `parent` names (another chain's, to build on it), else the strategy's
    newest target version of an earlier round, else the config's target."""
    target = config.target
    if not target.is_network:
        raise MadmineError(
            f"the target {target.name!r} is a maps model (precomputed predictions): fine-tuning needs a network; "
            "set arch, factory, hf or smp for it"
        )
    if not target.trainable:
        raise MadmineError(
            f"the target {target.name!r} is a {target.kind} file, which madmine runs but does not train: fine-tune "
            "the network it was exported from (as arch, factory, hf or smp), or export the fine-tuned network again"
        )
    if parent is not None:
        row = parent_row(config, ws, round_, parent)
    else:
        row = latest_row(ws, target.name, round_, selection) if config.finetune.start_from == "latest" else None
    spec = spec_of(config, row) if row else target
    base = (selection_of(row), int(row.get("round") or 0)) if row else None
    return Parent(spec, model_version(spec, config.storage_options, config.classes), base)


def with_latest_target(config: Config, ws: Workspace | None = None, before_round: int | None = None,
                       selection: str = tables.MAD) -> Config:
    """The config with its target at the newest version of one strategy's chain in the models table (MAD's by
    default; unchanged when there is none, or when [finetune] start_from = "original").

    For `madmine score`, `round` and `nightly`: round R troubleshoots what earlier rounds fixed, and
    scoring the new version with the cached competitor maps re-runs only the target.
    """
    if config.finetune.start_from != "latest" or not config.target.trainable:
        return config
    ws = ws or Workspace.from_config(config)
    row = latest_row(ws, config.target.name, before_round=before_round, selection=selection)
    if row is None:
        return config
    spec = spec_of(config, row)
    models = tuple(spec if m.name == spec.name else m for m in config.models)
    return dataclasses.replace(config, models=models)


def publish(config: Config, ws: Workspace, plan: Plan, winner: Outcome) -> dict:
    """Write the winner's weights and its row of the models table; returns the row."""
    spec = plan.parent_spec()
    weights = ws.get_bytes(f"{winner.checkpoint}/{winner.weights}")
    version = version_of(spec, weights, config.classes)
    path = ws.path("models", spec.name, f"{version}.pt")
    ws.put_bytes(path, weights)
    weights_uri = ws.url(path)
    built = dataclasses.replace(spec, weights=weights_uri, version=None)
    if model_version(built, config.storage_options, config.classes) != version:
        raise MadmineError(f"weights written to {weights_uri} do not read back as version {version}")
    row = {
        "model": spec.name,
        "model_version": version,
        "role": "target",
        "arch": spec.arch or (kind_of(spec).version_prefix(spec) if spec.kind not in ("arch", "factory") else None),
        "weights_uri": weights_uri,
        "parent_version": plan.parent_version,
        "created_at": datetime.now(UTC),
        "round": plan.round,
        "metrics": json.dumps(
            {"val_miou": winner.val_miou, "lr": winner.lr, "epoch": winner.epoch, "step": winner.point.get("step"),
             "steps": plan.total_steps, "epochs": plan.last_epoch, "rounds": list(plan.rounds),
             "s_failures": winner.s_failures, "s": len(plan.s), "choose_by": plan.choose_by,
             **({"v_failures": winner.v_failures, "v": len(plan.v)} if plan.v else {})}
        ),
        "checkpoint_uri": ws.url(winner.checkpoint),
        "val_miou": winner.val_miou,
        "lr": winner.lr,
        "factory": spec.factory,
        "selection": plan.selection,
    }
    repair.write(ws, repair.finetune_rows(row, winner.images, plan.tau),
                 repair.finetune_part(spec.name, plan.round, plan.selection))
    ws.write_parquet(
        tables.MODELS.path(ws, model=spec.name, round=plan.round, selection=plan.selection),
        pa.Table.from_pylist([row], schema=tables.MODELS.schema),
    )
    return row
