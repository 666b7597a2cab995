"""Fine-tuning on other strategies' picks with MAD's labelling budget (the paper's Table 2).

Entropy and random selection choose their n4 images directly (the top of their ranking);
so do the learned strategies (the n4 of highest predicted failure; they exist from round 1,
when round 0's ratings can teach the predictor). They need no ratings of their own, so they
get the same number of pixel labels as MAD's S. Each lives in its own workspace, forked
from the main one after the round's scoring (the run record, the manifest, its candidates,
the target's maps of its images, and MAD's S, labels and fine-tuned version of every earlier
round, which the fork builds on as MAD's own round does), so that `madmine annotate export`,
`annotate import` and `madmine finetune` run on it unchanged, and nothing it labels changes
what MAD selects. A fork of MAD's own S with another `[finetune] seed` measures how much
one training run's noise moves the figures.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pyarrow as pa

from madmine import tables
from madmine.completion import finetune_markers
from madmine.config import Config, parse_config
from madmine.steps.annotation.exchange import ExportParams, run_export
from madmine.steps.context import StepContext
from madmine.steps.score.map_store import MapStore
from madmine.steps.train import run as training
from madmine.workspace import Workspace
from madmine_demo.measure import best_first
from madmine_demo.people.annotator import label_and_import
from madmine_demo.world.truth import Truth


def fork_config(config: Config, workspace: Path, seed: int | None = None) -> Config:
    raw = copy.deepcopy(config.raw)
    raw["workspace"] = {"uri": str(workspace)}
    if seed is not None:
        raw.setdefault("finetune", {})["seed"] = seed
    return parse_config(raw, config.path.resolve().parent, config.path)


def _copy(src: Workspace, dst: Workspace, path: str) -> None:
    dst.put_bytes(dst.path(path), src.get_bytes(src.path(path)))


def _relative(ws: Workspace, path: str) -> str:
    return str(Path(path).relative_to(ws.root))


def s_rows(main: Workspace, strategy: str, round_: int, n4: int) -> list[dict]:
    """The strategy's S of the round: MAD's chosen by the ratings, the others' the n4 their ranking puts first."""
    if strategy == tables.MAD:
        return tables.SELECTED.read_file(main, round=round_, strategy=tables.MAD).to_pylist()
    rows = main.read_parquet([tables.CANDIDATES.path(main, round=round_, strategy=strategy)]).to_pylist()
    return best_first(rows, strategy)[:n4]


def fork(main: Workspace, config: Config, strategy: str, round_: int, run: dict, n4: int, root: Path,
         seed: int | None = None) -> tuple[Config, Workspace, int]:
    """A workspace holding what export and finetune read for the strategy's S; returns (config, ws, |S|)."""
    if root.exists():
        shutil.rmtree(root)
    cfg = fork_config(config, root, seed)
    ws = Workspace.from_config(cfg)
    for path in tables.MANIFEST.files(main):
        _copy(main, ws, _relative(main, path))
    _copy(main, ws, f"runs/{run['run_id']}/run.json")
    # In the fork the strategy is the only one: its candidates and S sit at MAD's paths,
    # so that export and finetune run there with their defaults.
    candidates = tables.CANDIDATES.path(ws, round=round_, strategy=tables.MAD)
    ws.put_bytes(candidates, main.get_bytes(tables.CANDIDATES.path(main, round=round_, strategy=strategy)))
    rows = s_rows(main, strategy, round_, n4)
    target = next(m for m in run["models"] if m["role"] == "target")
    store = MapStore(main)
    shard_of = {r["image_id"]: r["shard"] for r in ws.read_parquet([candidates]).select(["image_id", "shard"]).to_pylist()}
    for shard in sorted({shard_of[r["image_id"]] for r in rows}):  # the packs that hold S's target maps
        _copy(main, ws, _relative(main, store.path(target["name"], target["version"], shard)))
    for earlier in range(round_):  # MAD's chain so far: its S, their labels, its fine-tuned version
        _copy(main, ws, _relative(main, tables.SELECTED.path(main, round=earlier, strategy=tables.MAD)))
        _copy(main, ws, _relative(main, tables.MODELS.path(main, model=config.target.name, round=earlier, selection=tables.MAD)))
    if round_ > 0:
        for path in tables.LABELS.files(main):
            _copy(main, ws, _relative(main, path))
    table = pa.Table.from_pylist(
        [{"round": round_, "image_id": r["image_id"], "uri": r["uri"], "mos": r.get("mos"),
          "n_ratings": r.get("n_ratings") or 0, "rank": k} for k, r in enumerate(rows, start=1)],
        schema=tables.SELECTED.schema,
    )
    ws.write_parquet(tables.SELECTED.path(ws, round=round_, strategy=tables.MAD), table)  # at MAD's path, as above
    return cfg, ws, table.num_rows


def finetune_fork(main: Workspace, config: Config, strategy: str, round_: int, run: dict, n4: int, root: Path,
                  truth: Truth, ray_address: str | None = None, seed: int | None = None):
    """Fork, export S as COCO, label it truly, import, fine-tune; returns the FinetuneResult."""
    cfg = fork_config(config, root / "workspace", seed)
    ws = Workspace.from_config(cfg)
    if not finetune_markers(ws, f"round-{round_}-{tables.MAD}").is_done("done"):  # a finished fork is kept as it is
        cfg, ws, _ = fork(main, config, strategy, round_, run, n4, root / "workspace", seed)
        folder = root / "export-s"
        if folder.exists():
            shutil.rmtree(folder)
        run_export(StepContext.of(cfg), ExportParams("coco", folder, round_, "s"))
        truth.add_manifest(ws)
        label_and_import(ws, cfg, folder, truth)
    return training.run(StepContext.of(cfg, ray_address=ray_address), training.FinetuneParams(round_))
