"""Fine-tuning on the baselines' picks with MAD's labelling budget (the paper's Table 2).

Entropy and random selection choose their n4 images directly (the top of their ranking);
they need no ratings, so they get the same number of pixel labels as MAD's S. Each
baseline lives in its own workspace, forked from the main one after round 0's scoring (the
run record, the manifest, its candidates and the target's maps of its images), so that
`madmine annotate export`, `annotate import` and `madmine finetune` run on it unchanged, and
nothing it labels changes what MAD selects.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pyarrow as pa

from madmine import tables
from madmine.config import Config, parse_config
from madmine.steps.annotation.exchange import export
from madmine.steps.score.map_store import MapStore
from madmine.steps.train import finetune
from madmine.workspace import Workspace
from madmine_demo.people.annotator import label_and_import
from madmine_demo.world.truth import Truth


def fork_config(config: Config, workspace: Path) -> Config:
    raw = copy.deepcopy(config.raw)
    raw["workspace"] = {"uri": str(workspace)}
    return parse_config(raw, config.path.resolve().parent, config.path)


def _copy(src: Workspace, dst: Workspace, path: str) -> None:
    dst.put_bytes(dst.path(path), src.get_bytes(src.path(path)))


def fork(main: Workspace, config: Config, strategy: str, round_: int, run: dict, n4: int, root: Path) -> tuple[Config, Workspace, int]:
    """A workspace holding what export and finetune read for the baseline's S; returns (config, ws, |S|)."""
    if root.exists():
        shutil.rmtree(root)
    cfg = fork_config(config, root)
    ws = Workspace.from_config(cfg)
    for path in tables.MANIFEST.files(main):
        _copy(main, ws, str(Path(path).relative_to(main.root)))
    _copy(main, ws, f"runs/{run['run_id']}/run.json")
    # In the fork the baseline is the only strategy: its candidates and S sit at MAD's paths,
    # so that export and finetune run there with their defaults.
    candidates = tables.CANDIDATES.path(ws, round=round_, strategy=tables.MAD)
    ws.put_bytes(candidates, main.get_bytes(tables.CANDIDATES.path(main, round=round_, strategy=strategy)))
    rows = sorted(ws.read_parquet([candidates]).to_pylist(), key=lambda r: r["rank"])[:n4]
    target = next(m for m in run["models"] if m["role"] == "target")
    store = MapStore(main)
    for shard in sorted({r["shard"] for r in rows}):  # the packs that hold S's target maps
        _copy(main, ws, str(Path(store.path(target["name"], target["version"], shard)).relative_to(main.root)))
    table = pa.Table.from_pylist(
        [{"round": round_, "image_id": r["image_id"], "uri": r["uri"], "mos": None, "n_ratings": 0, "rank": k}
         for k, r in enumerate(rows, start=1)],
        schema=tables.SELECTED.schema,
    )
    ws.write_parquet(tables.SELECTED.path(ws, round=round_), table)
    return cfg, ws, table.num_rows


def finetune_baseline(main: Workspace, config: Config, strategy: str, round_: int, run: dict, n4: int, root: Path,
                      truth: Truth, ray_address: str | None = None):
    """Fork, export S as COCO, label it truly, import, fine-tune; returns the FinetuneResult."""
    cfg = fork_config(config, root / "workspace")
    ws = Workspace.from_config(cfg)
    if not ws.exists(ws.path("finetune", f"round-{round_}", "done.json")):  # a finished fork is kept as it is
        cfg, ws, _ = fork(main, config, strategy, round_, run, n4, root / "workspace")
        folder = root / "export-s"
        if folder.exists():
            shutil.rmtree(folder)
        export(ws, cfg, "coco", folder, round_, "s")
        truth.add_manifest(ws)
        label_and_import(ws, cfg, folder, truth)
    return finetune(cfg, round_, ray_address=ray_address, show_progress=False)
