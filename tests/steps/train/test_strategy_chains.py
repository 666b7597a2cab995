"""Strategies as first-class chains: each strategy's S, fine-tuned versions and names stay apart
in one workspace, and everything that asks for "the newest target" follows MAD's chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from configs import write_config
from madmine import tables
from madmine.config import load_config
from madmine.errors import EvaluationError, MadmineError
from madmine.steps.evaluation.compete import training_ids
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
    start = parent_of(cfg, ws, 1, "entropy")  # entropy's round 1 fine-tunes entropy's round 0
    assert start.spec.weights == made["v-ent0"] and start.base == ("entropy", 0)
    start = parent_of(cfg, ws, 1)
    assert start.spec.weights == made["v-mad0"] and start.base == ("mad", 0)
    assert parent_of(cfg, ws, 0).base is None  # round 0 starts from the config's target


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


def test_a_version_built_on_another_chain_learns_that_chains_s_then_its_own(chains):
    """`finetune --round 1 --selection learned --parent target@mad`: MAD's round-0 version's weights, MAD's
    S(1) (what that version learned) and learned's S(2); the competition later keeps all of them out."""
    cfg, ws, made = chains
    labels = []
    for strategy, round_, ids in (("mad", 0, ["m1"]), ("mad", 1, ["m2"]), ("learned", 1, ["l1", "m1"])):
        rows = [{"round": round_, "image_id": i, "uri": f"/img/{i}.png", "rank": k + 1} for k, i in enumerate(ids)]
        tables.SELECTED.write(ws, pa.Table.from_pylist(rows), round=round_, strategy=strategy)
        labels += [{"image_id": i, "mask_uri": f"/labels/{i}.png", "source": "coco", "round": round_, "created_at": T0}
                   for i in ids]
    tables.LABELS.write(ws, pa.Table.from_pylist(labels), part="p")
    start = parent_of(cfg, ws, 1, "learned", "target@mad")  # the chain's newest version before round 1
    assert start.spec.weights == made["v-mad0"] and start.base == ("mad", 0)
    s, rounds = training_data.collect_s(ws, 1, "learned", start.base)
    assert sorted(p.key for p in s) == ["l1", "m1"] and rounds == (0, 1)  # MAD's S(1), then learned's S(2); m1 once
    assert parent_of(cfg, ws, 1, "learned", "target@v-mad0").base == ("mad", 0)
    for bad, message in (("target@v-mad1", "earlier round"), ("target@random", "no fine-tuned version"),
                         ("other@mad", "must name a version of the target")):
        with pytest.raises(MadmineError, match=message):
            parent_of(cfg, ws, 1, "learned", bad)

    row = {"model": "target", "model_version": "v-learn1", "role": "target", "weights_uri": "/w.pt",
           "parent_version": "v-mad0", "created_at": T0 + timedelta(days=9), "round": 1, "selection": "learned"}
    tables.MODELS.write(ws, pa.Table.from_pylist([row]), model="target", round=1, selection="learned")
    ref = find_ref(model_refs(cfg, ws), "target@learned")
    assert training_ids(ws, ref, {"s0"}) == {"s0", "m1", "l1"}  # not MAD's S(2) (m2): v-mad0 never saw it


def test_a_replicates_version_is_never_the_chains_newest(chains):
    """`finetune --seed 1` keeps its version as target@mad-seed1: beside MAD's chain, never its parent."""
    cfg, ws, made = chains
    row = {"model": "target", "model_version": "v-rep", "role": "target", "weights_uri": "/rep.pt",
           "parent_version": "v-mad0", "created_at": T0 + timedelta(days=30), "round": 1, "selection": "mad-seed1"}
    tables.MODELS.write(ws, pa.Table.from_pylist([row]), model="target", round=1, selection="mad-seed1")
    assert tables.MODELS.keys_of(tables.MODELS.path(ws, model="target", round=1, selection="mad-seed1")) == {
        "model": "target", "round": "1", "selection": "mad-seed1"}
    assert with_latest_target(cfg, ws).target.weights == made["v-mad1"]
    assert parent_of(cfg, ws, 2).spec.weights == made["v-mad1"]
    assert find_ref(model_refs(cfg, ws), "target@v-rep").selection == "mad-seed1"
