"""`madmine bounds`: quartiles of class area fractions over labelled PNGs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from madmine.config import load_config
from madmine.errors import MadmineError
from madmine.steps.bounds import run_bounds
from selection_world import CLASSES, config_text, invoke, write_labels


def expected_bounds(maps: list[np.ndarray], quantiles=(0.25, 0.75)) -> dict[int, tuple[float, float, int] | None]:
    """numpy's linear quantile is DuckDB's quantile_cont."""
    out = {}
    for k in range(len(CLASSES)):
        fractions = [np.sum(m == k) / m.size for m in maps if np.sum(m == k) > 0]
        if not fractions:
            out[k] = None
            continue
        p, q = np.quantile(fractions, quantiles)
        out[k] = (float(p), float(q), len(fractions))
    return out


def make_config(tmp_path: Path, selection: str = ""):
    maps = tmp_path / "maps"
    maps.mkdir(exist_ok=True)
    path = tmp_path / "madmine.toml"
    path.write_text(config_text(str(tmp_path / "work"), maps, ("fcn",), selection))
    return load_config(path), path


@pytest.mark.parametrize("quantiles", [(0.25, 0.75), (0.1, 0.5)])
def test_bounds_are_quantiles_of_fractions(tmp_path, quantiles, caplog):
    maps = write_labels(tmp_path / "labels")
    config, _ = make_config(tmp_path, f"quantiles = {list(quantiles)}")
    with caplog.at_level(logging.WARNING):
        result = run_bounds(config, str(tmp_path / "labels"))
    assert result.labels == 30
    table = pq.read_table(tmp_path / "work" / "tables" / "bounds" / "bounds.parquet")
    assert table.column_names[:5] == ["class_id", "class_name", "p", "q", "n_images"]
    rows = table.to_pylist()
    assert [r["class_name"] for r in rows] == CLASSES
    for r, (k, exp) in zip(rows, expected_bounds(maps, quantiles).items()):
        assert r["class_id"] == k
        if exp is None:
            assert (r["p"], r["q"], r["n_images"]) == (None, None, 0)
        else:
            assert r["p"] == pytest.approx(exp[0], rel=1e-12)
            assert r["q"] == pytest.approx(exp[1], rel=1e-12)
            assert r["n_images"] == exp[2]
    assert result.missing == ["boat"]
    assert "boat" in caplog.text and "form no group" in caplog.text


def test_unlabelled_class_forms_no_group(tmp_path):
    """A class without bounds never appears in candidates, even where it is predicted."""
    from madmine.steps.select import run_select
    from selection_world import build_world

    world = build_world(tmp_path / "w", extras=False)
    write_labels(tmp_path / "labels")
    run_bounds(world.config, str(tmp_path / "labels"))
    result = run_select(world.config, 0)
    predicted_boat = [r for r in world.predictions if r["class_pixels"][CLASSES.index("boat")] > 0]
    assert predicted_boat and result.num_rows > 0
    assert "boat" not in set(result.table.column("class_name").to_pylist())


def test_rgb_label_is_refused(tmp_path):
    write_labels(tmp_path / "labels", n=3)
    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "labels" / "colour.png")
    config, _ = make_config(tmp_path)
    with pytest.raises(MadmineError, match="colour.png is a RGB image: labels must be single-channel"):
        run_bounds(config, str(tmp_path / "labels"))


def test_out_of_range_class_is_refused(tmp_path):
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.full((3, 3), 9, np.uint8), "L").save(tmp_path / "labels" / "x.png")
    config, _ = make_config(tmp_path)
    with pytest.raises(MadmineError, match=r"x.png holds class ids \[9\] but \[classes\] names lists 6"):
        run_bounds(config, str(tmp_path / "labels"))


def test_missing_or_empty_labels_folder(tmp_path):
    config, _ = make_config(tmp_path)
    with pytest.raises(MadmineError, match="does not exist"):
        run_bounds(config, str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MadmineError, match="no PNG label maps under"):
        run_bounds(config, str(tmp_path / "empty"))


def test_cli_bounds(tmp_path):
    write_labels(tmp_path / "labels")
    _, path = make_config(tmp_path)
    result, text = invoke(["--config", str(path), "bounds", str(tmp_path / "labels")])
    assert result.exit_code == 0, text
    assert "bounds from 30 label maps" in text and "boat" in text
    assert (tmp_path / "work" / "tables" / "bounds" / "bounds.parquet").exists()
    result, text = invoke(["--config", str(path), "bounds", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "does not exist" in text and "Traceback" not in text


def test_split_list_keeps_only_the_training_split(tmp_path):
    """`bounds LABELS_DIR --list train.txt`: a VOC-style folder holds train and val; only the listed
    stems (S(0)) count, which moves the quartiles when val differs."""
    maps = write_labels(tmp_path / "labels")
    train = [i for i in range(30) if i % 3 != 1]  # val: every third image, in the same folder
    listing = tmp_path / "train.txt"
    listing.write_text("# VOC ImageSets/Segmentation/train.txt\n" + "".join(f"lab{i:03d}\n" for i in train) + "\n")
    config, path = make_config(tmp_path)
    result = run_bounds(config, str(tmp_path / "labels"), split=str(listing))
    assert result.labels == len(train) and result.listed == len(train)
    rows = pq.read_table(tmp_path / "work" / "tables" / "bounds" / "bounds.parquet").to_pylist()
    expected = expected_bounds([maps[i] for i in train])
    every = expected_bounds(maps)
    assert any(every[k] != expected[k] for k in expected)  # the split matters in this world
    for r in rows:
        exp = expected[r["class_id"]]
        assert (r["p"], r["q"]) == ((None, None) if exp is None else (pytest.approx(exp[0]), pytest.approx(exp[1])))
    result, text = invoke(["--config", str(path), "bounds", str(tmp_path / "labels"), "--list", str(listing)])
    assert result.exit_code == 0 and f"bounds from {len(train)} label maps named by" in text
    listing.write_text("lab000\nlab999\n")
    with pytest.raises(MadmineError, match="1 of the 2 stems .* have no label PNG"):
        run_bounds(config, str(tmp_path / "labels"), split=str(listing))
