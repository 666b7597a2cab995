"""Strategies as first-class chains: each strategy's S, fine-tuned versions and names stay apart
in one workspace, and everything that asks for "the newest target" follows MAD's chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from configs import write_config
from madmine import tables
from madmine.config import load_config
from madmine.errors import EvaluationError
from madmine.steps.evaluation.predictions import find_ref, model_refs
from madmine.steps.train import data as training_data
from madmine.steps.train.data import DataError
from madmine.steps.train.versions import parent_of, with_latest_target
from madmine.workspace import Workspace
from round_world import MODELS

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def chains(tmp_path):
    cfg = load_config(write_config(tmp_path, MODELS))
    ws = Workspace.from_config(cfg)
    made = {}
    # MAD round 0, entropy round 0 (made later than MAD's round 1), MAD round 1
    for k, (selection, round_, version) in enumerate((("mad", 0, "v-mad0"), ("mad", 1, "v-mad1"), ("entropy", 0, "v-ent0"))):
        weights = tmp_path / f"{version}.pt"
        weights.write_bytes(version.encode())
        row = {"model": "target", "model_version": version, "role": "target", "weights_uri": str(weights),
               "parent_version": None, "created_at": T0 + timedelta(days=k), "round": round_, "selection": selection}
        tables.MODELS.write(ws, pa.Table.from_pylist([row]), model="target", round=round_, selection=selection)
        made[version] = str(weights)
    return cfg, ws, made


def test_the_newest_target_follows_mads_chain_unless_asked(chains):
    cfg, ws, made = chains
    assert {p.rsplit("/", 1)[-1] for p in tables.MODELS.files(ws)} == {
        "target-round-0-mad.parquet", "target-round-1-mad.parquet", "target-round-0-entropy.parquet"}
    assert with_latest_target(cfg, ws).target.weights == made["v-mad1"]  # not the newer entropy version
    assert with_latest_target(cfg, ws, before_round=1).target.weights == made["v-mad0"]
    assert with_latest_target(cfg, ws, selection="entropy").target.weights == made["v-ent0"]
    assert with_latest_target(cfg, ws, selection="random").target.weights == cfg.target.weights  # no chain yet
    spec, _ = parent_of(cfg, ws, 1, "entropy")  # entropy's round 1 fine-tunes entropy's round 0
    assert spec.weights == made["v-ent0"]
    spec, _ = parent_of(cfg, ws, 1)
    assert spec.weights == made["v-mad0"]


def test_names_of_strategy_versions_resolve_through_the_models_table(chains):
    cfg, ws, _ = chains
    refs = model_refs(cfg, ws)
    assert find_ref(refs, "target@mad").version == "v-mad1"
    assert find_ref(refs, "target@mad:0").version == "v-mad0"
    entropy = find_ref(refs, "target@entropy")
    assert entropy.version == "v-ent0" and entropy.selection == "entropy"
    assert entropy.trained_on == "S(0) + S(1) (entropy)"
    assert find_ref(refs, "target@mad").trained_on == "S(0) + S(1) + S(2) (mad)"
    with pytest.raises(EvaluationError, match="finetune --round R --selection random"):
        find_ref(refs, "target@random")
    with pytest.raises(EvaluationError, match="of round 3"):
        find_ref(refs, "target@entropy:3")


def test_each_strategy_trains_on_its_own_s(chains):
    cfg, ws, _ = chains
    labels = []
    for strategy, ids in (("mad", ["m1", "m2"]), ("entropy", ["e1"])):
        rows = [{"round": 0, "image_id": i, "uri": f"/img/{i}.png", "rank": k + 1, "strategy": strategy}
                for k, i in enumerate(ids)]
        tables.SELECTED.write(ws, pa.Table.from_pylist(rows), round=0, strategy=strategy)
        labels += [{"image_id": i, "mask_uri": f"/labels/{i}.png", "source": "coco", "round": 0, "created_at": T0} for i in ids]
    tables.LABELS.write(ws, pa.Table.from_pylist(labels), part="p")
    mad, rounds = training_data.collect_s(ws, 0)
    assert sorted(p.key for p in mad) == ["m1", "m2"] and rounds == (0,)
    entropy, _ = training_data.collect_s(ws, 0, "entropy")
    assert [p.key for p in entropy] == ["e1"]
    with pytest.raises(DataError, match="rate select --round 0 --strategy random"):
        training_data.collect_s(ws, 0, "random")
