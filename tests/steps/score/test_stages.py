"""The scoring stages as plain functions, without Ray: decode_batch and Scorer on one batch,
checked against numpy computations written here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from configs import CLASSES, COLOUR, model, models, write_config
from madmine.config import load_config
from madmine.models.registry import check_models
from madmine.steps.score.context import ScoreContext, column
from madmine.steps.score.decode import decode_batch, pixels_column
from madmine.steps.score.predict import Scorer
from references import reference_d
from worlds import write_corpus, write_maps

MODELS = models(
    model("target", "target", factory=COLOUR, input_size=32),
    model("maps", "competitor", maps="maps/"),
)


def batch_of(uris: list[str]) -> dict[str, np.ndarray]:
    return {
        "image_id": np.array([f"id{i:03d}" for i in range(len(uris))], dtype=object),
        "uri": np.array(uris, dtype=object),
        "shard": np.array(["s0"] * len(uris), dtype=object),
    }


def colour_net_map(rgb: np.ndarray) -> np.ndarray:
    """ColourNet's prediction, by its definition: normalise, background where dark, else the
    strongest of (0, R, G, B)."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = ((rgb.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
    dark = (x.mean(axis=2) < -1.2).astype(np.float32) * 100.0
    return np.concatenate([dark[..., None], x], axis=2).argmax(axis=2).astype(np.uint8)


@pytest.fixture
def world(tmp_path):
    paths = write_corpus(tmp_path / "corpus", 5, seed=7)
    write_maps(tmp_path / "maps", paths)
    broken = tmp_path / "corpus" / "broken.png"
    broken.write_bytes(paths[0].read_bytes()[:60])  # a valid header, then nothing
    missing = tmp_path / "corpus" / "gone.png"
    cfg = load_config(write_config(tmp_path, MODELS, scoring="batch_size = 8"))
    ctx = ScoreContext("run", cfg.classes, (cfg.target, *cfg.competitors), check_models(cfg), cfg.workspace_uri,
                       {}, cfg.scoring)
    return tmp_path, paths, [str(p) for p in paths] + [str(broken), str(missing)], ctx


def test_decode_batch_resizes_every_good_image_and_names_every_bad_one(world):
    _, paths, uris, _ = world
    out = decode_batch(batch_of(uris), sizes=(16, 32))
    assert list(out["error"][:5]) == [""] * 5
    assert out["error"][5] == "truncated or corrupt image data" and out["stage"][5] == "decode"
    assert out["error"][6] == "file not found" and "gone.png" in out["detail"][6]
    for size in (16, 32):
        pixels = out[pixels_column(size)]
        assert pixels.shape == (7, size, size, 3) and pixels.dtype == np.uint8
        for i, path in enumerate(paths):
            expected = np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR))
            assert np.array_equal(pixels[i], expected)
        assert not pixels[5:].any()  # failed rows keep their place, zeroed
    assert list(out["image_id"]) == list(batch_of(uris)["image_id"])


def test_scorer_summarises_maps_and_pairs_like_numpy(world):
    root, paths, uris, ctx = world
    scorer = Scorer(ctx)
    out = scorer(decode_batch(batch_of(uris), sizes=ctx.input_sizes)).columns
    c = len(CLASSES)
    for i, path in enumerate(paths):
        rgb = np.asarray(Image.open(path).convert("RGB").resize((32, 32), Image.BILINEAR))
        target = colour_net_map(rgb)
        competitor = np.asarray(Image.open(root / "maps" / f"{path.stem}.png"))
        competitor = np.asarray(Image.fromarray(competitor).resize((32, 32), Image.NEAREST))
        assert out[column("cp", "target")][i].tolist() == [int((target == k).sum()) for k in range(c)]
        assert out[column("cp", "maps")][i].tolist() == [int((np.asarray(Image.open(root / "maps" / f"{path.stem}.png")) == k).sum()) for k in range(c)]
        assert (out[column("h", "target")][i], out[column("w", "target")][i]) == (32, 32)
        assert out[column("d", "maps")][i] == pytest.approx(reference_d(target, competitor, c))
        assert 0.0 <= out[column("ent", "target")][i] and 0.0 < out[column("msp", "target")][i] <= 1.0
        assert np.isnan(out[column("ent", "maps")][i])  # a maps model has no probabilities
        assert out[column("fw", "target")][i] and not out[column("fw", "maps")][i]
    assert list(out["error"][5:]) == ["truncated or corrupt image data", "file not found"]
    assert not out[column("cp", "target")][5:].any()


def test_a_missing_precomputed_map_fails_that_image_only(world):
    root, paths, uris, ctx = world
    (root / "maps" / f"{paths[1].stem}.png").unlink()
    out = Scorer(ctx)(decode_batch(batch_of(uris[:5]), sizes=ctx.input_sizes)).columns
    assert out["error"][1] == "no precomputed map" and out["stage"][1] == "predict"
    assert [e for k, e in enumerate(out["error"]) if k != 1] == [""] * 4
