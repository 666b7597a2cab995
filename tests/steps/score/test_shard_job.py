"""Shards without Ray: planning from the parts' footers, a worker's slice of a part, and a
worker that scores, stores and commits whole shards (one pack per model, no file per image)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest

from configs import COLOUR, DILATED, model, models, write_config
from madmine import tables
from madmine.completion import shard_markers
from madmine.config import load_config
from madmine.models.device import resolve_prefetch
from madmine.models.registry import check_models
from madmine.steps.ingest import ingest
from madmine.steps.score.context import ScoreContext
from madmine.steps.score.map_store import MapStore, StoredMap
from madmine.steps.score.shard_job import ShardWorker
from madmine.steps.score.shards import plan_shards, read_shard_rows, shards_of
from madmine.workspace import Workspace
from worlds import write_corpus

MODELS = models(
    model("target", "target", factory=COLOUR, input_size=32),
    model("dilated", "competitor", factory=DILATED, input_size=24),
)


@pytest.fixture
def world(tmp_path):
    write_corpus(tmp_path / "a", 7, seed=1)
    write_corpus(tmp_path / "b", 5, seed=2)
    cfg = load_config(write_config(tmp_path, MODELS, scoring="shard_size = 3\nbatch_size = 2"))
    ws = Workspace.from_config(cfg)
    ingest(ws, [str(tmp_path / "a")], show_progress=False)
    ingest(ws, [str(tmp_path / "b")], show_progress=False)
    return cfg, ws


def context(cfg, ws, versions, run_id="run"):
    store = MapStore(ws)
    packs = {m.name: frozenset(store.packs(m.name, versions[m.name])) for m in cfg.models}
    return ScoreContext(run_id, cfg.classes, (cfg.target, *cfg.competitors), versions, cfg.workspace_uri, {}, cfg.scoring,
                        stored_packs=packs)


def test_shards_cover_every_image_once_in_id_order_and_shards_of_agrees(world):
    cfg, ws = world
    specs = plan_shards(ws, 3)
    by_part: dict[str, list[int]] = {}
    for s in specs:
        by_part.setdefault(s.part_path, []).append(s.size)
    assert sorted(by_part.values()) == [[3, 2], [3, 3, 1]]  # parts of 7 and 5 images, 3 at a time
    seen = []
    for spec in specs:
        ids = read_shard_rows(ws, spec).column("image_id").to_pylist()
        assert ids == sorted(ids) and len(ids) == spec.size
        seen += ids
        assert shards_of(ws, ids, 3) == {i: spec.shard for i in ids}
    manifest = tables.MANIFEST.read(ws).column("image_id").to_pylist()
    assert sorted(seen) == sorted(manifest) and len(set(seen)) == len(seen)
    part = pq.ParquetFile(tables.MANIFEST.files(ws)[0])
    assert part.schema_arrow.metadata[tables.SORTED_BY] == b"image_id"


def test_a_worker_commits_whole_shards_and_a_new_target_reads_the_competitor_back(world):
    cfg, ws = world
    versions = check_models(cfg)
    specs = plan_shards(ws, 3)
    worker = ShardWorker(context(cfg, ws, versions))
    summaries = [worker(spec) for spec in specs]
    assert [s["forwarded"] for s in summaries] == [{"target": s.size, "dilated": s.size} for s in specs]
    assert sorted(shard_markers(ws, "run").done()) == sorted(s.shard for s in specs)
    marker = shard_markers(ws, "run").get(specs[0].shard)
    phases = marker["timings"]
    assert {"forward target", "forward dilated", "decode (decode threads)", "encode and write map packs"} <= set(phases)
    main_thread = sum(v for k, v in phases.items() if "decode threads" not in k)  # the rest overlaps these
    assert 0 < main_thread <= marker["seconds"] * 1.01
    store = MapStore(ws)
    for name in ("target", "dilated"):  # one pack per (model, shard): no object per image
        assert store.packs(name, versions[name]) == {s.shard for s in specs}
    preds = tables.PREDICTIONS.read(ws, run_id="run")
    assert preds.num_rows == 2 * 12 and set(preds.column("model").to_pylist()) == {"target", "dilated"}
    assert tables.ERRORS.files(ws, run_id="run") == []  # no error file for shards without errors
    first = {r["image_id"]: r["d"] for r in tables.PAIRS.read(ws, run_id="run").to_pylist()}

    new = dict(versions, target="target-v2")  # a new target version: the same net, so the same maps
    worker2 = ShardWorker(context(cfg, ws, new, run_id="run2"))
    summaries2 = [worker2(spec) for spec in specs]
    assert all(s["forwarded"]["dilated"] == 0 and s["forwarded"]["target"] == spec.size for s, spec in zip(summaries2, specs))
    second = {r["image_id"]: r["d"] for r in tables.PAIRS.read(ws, run_id="run2").to_pylist()}
    assert second == pytest.approx(first)
    assert store.packs("target", "target-v2") == {s.shard for s in specs}


def test_a_broken_image_is_an_error_row_and_the_shard_still_commits(world, tmp_path):
    cfg, ws = world
    spec = plan_shards(ws, 3)[0]
    victim = read_shard_rows(ws, spec).column("uri").to_pylist()[1]
    with open(victim, "r+b") as fh:
        fh.truncate(40)
    summary = ShardWorker(context(cfg, ws, check_models(cfg)))(spec)
    assert summary["errors"] == 1
    errors = tables.ERRORS.read(ws, run_id="run").to_pylist()
    assert [(e["uri"], e["stage"]) for e in errors] == [(victim, "decode")]
    assert tables.PREDICTIONS.read(ws, run_id="run").num_rows == 2 * 2
    assert len(MapStore(ws).read_pack("target", check_models(cfg)["target"], spec.shard)) == 2


def test_packs_keep_maps_and_uncertainty_exactly(tmp_path):
    ws = Workspace(str(tmp_path))
    store = MapStore(ws)
    rng = np.random.default_rng(0)
    entries = {f"id{k:03d}": StoredMap(rng.integers(0, 5, size=(9 + k % 3, 7)).astype(np.uint8), k / 10, 1 - k / 20)
               for k in range(40)}
    store.write_pack("m", "v", "p", entries)
    back = store.read_pack("m", "v", "p")
    assert back.keys() == entries.keys()
    for k, e in entries.items():
        assert np.array_equal(back[k].map, e.map) and back[k].mean_entropy == e.mean_entropy
    some = store.get_many("m", "v", {"id005": "p", "id033": "p", "nope": "p"})
    assert set(some) == {"id005", "id033"} and np.array_equal(some["id033"].map, entries["id033"].map)
    assert store.read_pack("m", "v", "missing") is None
    assert dataclasses.asdict(store.get("m", "v", "id001", "p"))["mean_msp"] == pytest.approx(0.95)


def test_decoding_when_needed_and_decoding_ahead_score_the_same(world):
    """prefetch_batches "auto" decodes each batch when needed on a CPU (0) and two ahead on a
    GPU; both paths see every image once and give the same tables."""
    cfg, ws = world
    assert (resolve_prefetch("auto", "cpu"), resolve_prefetch("auto", "cuda"), resolve_prefetch(3, "cpu")) == (0, 2, 3)
    versions = check_models(cfg)
    specs = plan_shards(ws, 3)
    rows = {}
    for run_id, prefetch in (("when-needed", "auto"), ("ahead", 2)):
        scoring = dataclasses.replace(cfg.scoring, prefetch_batches=prefetch, cache_maps=False)
        ctx = dataclasses.replace(context(cfg, ws, versions, run_id=run_id), scoring=scoring, stored_packs={})
        worker = ShardWorker(ctx)
        assert [worker(spec)["images"] for spec in specs] == [spec.size for spec in specs]
        rows[run_id] = sorted((r["image_id"], r["competitor"], r["d"], tuple(r["intersection"]))
                              for r in tables.PAIRS.read(ws, run_id=run_id).to_pylist())
    assert len(rows["ahead"]) == 12 and len({r[0] for r in rows["ahead"]}) == 12
    assert rows["when-needed"] == rows["ahead"]
