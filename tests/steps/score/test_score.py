"""`madmine score` end to end on a real Ray cluster: torchvision architectures and maps models."""

import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from PIL import Image

from configs import model, models, write_config
from madmine import tables
from madmine.config import load_config
from madmine.steps.ingest import ingest
from madmine.steps.score.run import score
from madmine.workspace import Workspace
from references import reference_d
from worlds import stored_map, write_corpus, write_maps


def models_with(weights: str | None = None) -> str:
    """A torchvision target (random init, or `weights`), a torchvision competitor and a maps folder."""
    return models(
        model("target", "target", arch="lraspp_mobilenet_v3_large", input_size=64, weights=weights),
        model("dlv3", "competitor", arch="deeplabv3_mobilenet_v3_large", input_size=64),
        model("ext", "competitor", maps="maps/"),
    )


def counts(table, *keys):
    grouped = table.group_by(list(keys)).aggregate([([], "count_all")])
    return grouped.column("count_all").to_pylist()


@pytest.fixture(scope="module")
def scored(ray_address, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    paths = write_corpus(root / "corpus", 20, seed=3)
    write_maps(root / "maps", paths)
    cfg = load_config(write_config(root, models_with(), scoring="shard_size = 8\nbatch_size = 4"))
    ws = Workspace.from_config(cfg)
    ingest(ws, [str(root / "corpus")], show_progress=False)
    result = score(cfg, ray_address=ray_address, show_progress=False)
    return root, cfg, ws, result


def test_every_image_once_per_model_and_once_per_competitor(scored):
    _, cfg, ws, result = scored
    assert result.shards_total == 3 and result.errors == 0 and result.images_scored == 20
    ids = set(tables.MANIFEST.read(ws).column("image_id").to_pylist())
    preds = tables.PREDICTIONS.read(ws, run_id=result.run_id)
    pairs = tables.PAIRS.read(ws, run_id=result.run_id)
    assert preds.num_rows == 20 * 3 and set(counts(preds, "image_id", "model")) == {1}
    assert set(preds.column("image_id").to_pylist()) == ids
    assert pairs.num_rows == 20 * 2 and set(counts(pairs, "image_id", "competitor")) == {1}
    assert set(pc.unique(pairs.column("competitor")).to_pylist()) == {"dlv3", "ext"}
    for row in preds.to_pylist():
        assert len(row["class_pixels"]) == 4
        if row["model"] in ("target", "dlv3"):
            assert sum(row["class_pixels"]) == row["height"] * row["width"]
            assert (row["height"], row["width"]) == (64, 64)
        if row["model"] == "target":  # uncertainty baselines rank by the target's values
            assert 0.25 <= row["mean_msp"] <= 1 and 0 <= row["mean_entropy"] <= np.log(4)
        elif row["model"] == "dlv3":
            assert row["mean_msp"] is None and row["mean_entropy"] is None
        else:  # precomputed maps keep their own size; their 255 pixels are not counted
            assert (row["height"], row["width"]) == (24, 36) and row["mean_msp"] is None
            assert 0 < sum(row["class_pixels"]) < 24 * 36


def test_pairs_equal_an_independent_computation_from_the_maps(scored):
    root, cfg, ws, result = scored
    versions = {m["name"]: m["version"] for m in ws.get_json(ws.path("runs", result.run_id, "run.json"))["models"]}
    manifest = {r["image_id"]: r["uri"] for r in tables.MANIFEST.read(ws).to_pylist()}
    checked = 0
    for row in tables.PAIRS.read(ws, run_id=result.run_id).to_pylist():
        target_map = stored_map(ws, "target", versions["target"], row["image_id"])
        if row["competitor"] == "ext":
            stem = manifest[row["image_id"]].rsplit("/", 1)[-1].rsplit(".", 1)[0]
            other = Image.open(root / "maps" / f"{stem}.png").resize((64, 64), Image.NEAREST)
            other = np.asarray(other)
        else:
            other = stored_map(ws, "dlv3", versions["dlv3"], row["image_id"])
        expected = reference_d(target_map, other, 4)
        assert row["d"] == pytest.approx(expected, abs=1e-12)
        checked += 1
    assert checked == 40


def test_rerun_of_a_finished_run_does_nothing(scored, ray_address):
    _, cfg, ws, result = scored
    again = score(cfg, ray_address=ray_address, show_progress=False)
    assert again.run_id == result.run_id and again.shards_scored == 0 and again.images_scored == 0


def test_new_target_version_reuses_cached_competitor_maps(scored, ray_address):
    root, cfg, ws, first = scored
    from madmine.models.registry import build_network

    new_target = build_network(cfg.target, 4)
    with torch.no_grad():
        for p in new_target.parameters():
            p.add_(0.01)
    torch.save(new_target.state_dict(), root / "target_v2.pt")
    cfg2 = load_config(
        write_config(root, models_with("target_v2.pt"), scoring="shard_size = 8\nbatch_size = 4")
    )
    second = score(cfg2, ray_address=ray_address, show_progress=False)
    assert second.run_id != first.run_id
    assert second.forwarded == {"target": 20, "dlv3": 0, "ext": 0}
    before = tables.PREDICTIONS.read(ws, run_id=first.run_id).filter(pc.field("model") == "dlv3").sort_by("image_id")
    after = tables.PREDICTIONS.read(ws, run_id=second.run_id).filter(pc.field("model") == "dlv3").sort_by("image_id")
    assert before.drop_columns(["run_id"]).equals(after.drop_columns(["run_id"]))
    versions = set(tables.PAIRS.read(ws, run_id=second.run_id).column("target_version").to_pylist())
    assert len(versions) == 1 and versions.pop().startswith("lraspp_mobilenet_v3_large-")
