"""Exports decoded by the tools' own libraries equal the source masks; edited annotations
come back as the edited masks."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from label_studio_sdk.converter import brush
from PIL import Image
from pycocotools import mask as mask_util
from typer.testing import CliRunner

import rating_world
from madmine import tables
from madmine.cli import state as cli_state
from madmine.cli.annotate import annotate_app
from madmine.images import decode_map_png
from madmine.metrics import IGNORE
from madmine.steps.annotation import ignore_name, lsbrush
from madmine.steps.annotation.exchange import export, import_
from madmine.steps.rating import selection, store

# pycocotools calls np.array(copy=False) on its own objects; harmless under NumPy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
CLASSES = rating_world.CLASSES
IGNORE_NAME = ignore_name(tuple(CLASSES))


def class_of(name: str) -> int:
    return IGNORE if name == IGNORE_NAME else CLASSES.index(name)


@pytest.fixture
def world(tmp_path):
    """Round 0 rated by one rater; S = every image (n4 = 6), the EXIF-rotated one included."""
    world = rating_world.build(tmp_path / "w")
    for k, image_id in enumerate(world.image_ids):
        store.record(world.ws, 0, image_id, "alice", 1 + k % 5)
    chosen = selection.select(store.latest(store.load_events(world.ws, 0)), 0,
                              {i: "" for i in world.image_ids}, n4=6, min_raters=1)
    selection.write(world.ws, 0, chosen)
    return world


def stored_label(world, image_id: str) -> np.ndarray:
    return decode_map_png(world.ws.get_bytes(world.ws.path("labels", f"{image_id}.png")))[0]


def edit(mask: np.ndarray) -> np.ndarray:
    """What an annotator might do: repaint a block as bird, and clear the top-left corner."""
    edited = mask.copy()
    h, w = edited.shape
    edited[h // 2 : h // 2 + 6, 2:12] = 3
    edited[:4, :4] = 0
    return edited


def test_exported_images_are_as_displayed(world, tmp_path):
    out = tmp_path / "ls"
    export(world.ws, world.config, "labelstudio", out, 0)
    meta = json.loads((out / "madmine-export.json").read_text())
    assert {i["image_id"] for i in meta["images"]} == set(world.image_ids)
    for image in meta["images"]:
        with Image.open(out / "images" / image["file"]) as img:
            assert img.size == (image["width"], image["height"])
            assert (image["height"], image["width"]) == world.sizes[image["image_id"]]


def test_test_sets_export_only_their_round(world, tmp_path):
    import pyarrow as pa

    ids = world.image_ids
    rows = [{"round": 0, "image_id": ids[1]}, {"round": 0, "image_id": ids[3]}, {"round": 1, "image_id": ids[2]}]
    world.ws.write_parquet(tables.TESTSETS.path(world.ws, round=0), pa.Table.from_pylist(rows))
    count, _ = export(world.ws, world.config, "coco", tmp_path / "t0", 0, which="test")
    meta = json.loads((tmp_path / "t0" / "madmine-export.json").read_text())
    assert count == 2 and meta["set"] == "test" and [i["image_id"] for i in meta["images"]] == [ids[1], ids[3]]


def test_labelstudio_brush_decodes_with_the_sdk_and_imports_edits(world, tmp_path):
    out = tmp_path / "ls"
    count, _ = export(world.ws, world.config, "labelstudio", out, 0)
    assert count == len(world.image_ids)
    tasks = json.loads((out / "tasks.json").read_text())
    config_xml = (out / "labeling-config.xml").read_text()
    assert all(f'"{name}"' in config_xml for name in CLASSES[1:] + [IGNORE_NAME])
    for task in tasks:
        image_id = task["data"]["image_id"]
        assert task["data"]["image"] == f"/data/local-files/?d=ls/images/{image_id}{Path(task['data']['image']).suffix}"
        h, w = world.sizes[image_id]
        decoded = np.zeros((h, w), dtype=np.uint8)
        for result in task["predictions"][0]["result"]:
            assert (result["original_height"], result["original_width"]) == (h, w)
            layer = brush.decode_rle(result["value"]["rle"]).reshape(h, w, 4)[:, :, 3]
            assert set(np.unique(layer)) <= {0, 255}
            decoded[layer == 255] = class_of(result["value"]["brushlabels"][0])
        np.testing.assert_array_equal(decoded, world.target_maps[image_id])

    # annotators accept most predictions, edit one (painting with Label Studio's own encoder), skip one
    edited_id, skipped_id = tasks[0]["data"]["image_id"], tasks[-1]["data"]["image_id"]
    expected = {}
    for n, task in enumerate(tasks):
        image_id = task["data"]["image_id"]
        task["id"] = n + 1
        if image_id == skipped_id:
            task["annotations"] = [{"result": [], "was_cancelled": True}]
            continue
        result = task["predictions"][0]["result"]
        expected[image_id] = world.target_maps[image_id]
        if image_id == edited_id:
            expected[image_id] = edit(world.target_maps[image_id])
            result = []
            for value in np.unique(expected[image_id]).tolist():
                if value == 0:
                    continue
                layer = np.where(expected[image_id] == value, 255, 0).astype(np.uint8)
                name = IGNORE_NAME if value == IGNORE else CLASSES[value]
                h, w = layer.shape
                result.append({"type": "brushlabels", "from_name": "label", "to_name": "image",
                               "original_width": w, "original_height": h,
                               "value": {"format": "rle", "rle": brush.mask2rle(layer), "brushlabels": [name]}})
        task["annotations"] = [{"result": result, "was_cancelled": False, "created_at": "2026-01-02T00:00:00Z"}]
    finished = out / "project-1-at-2026.json"  # downloaded next to the export: its round is known
    finished.write_text(json.dumps(tasks))
    table, unfinished = import_(world.ws, world.config, "labelstudio", finished)
    assert unfinished == 1 and table.num_rows == len(tasks) - 1
    for image_id, mask in expected.items():
        np.testing.assert_array_equal(stored_label(world, image_id), mask)
    assert not world.ws.exists(world.ws.path("labels", f"{skipped_id}.png"))
    rows = tables.LABELS.read(world.ws).to_pylist()
    assert {r["image_id"] for r in rows} == set(expected)
    assert all(r["source"] == "labelstudio" and r["round"] == 0 and r["mask_uri"].endswith(".png") for r in rows)


def test_labelstudio_polygons_are_painted(world, tmp_path):
    out = tmp_path / "ls"
    export(world.ws, world.config, "labelstudio", out, 0)
    tasks = json.loads((out / "tasks.json").read_text())[:1]
    image_id = tasks[0]["data"]["image_id"]
    h, w = world.sizes[image_id]
    square = [[0, 0], [50, 0], [50, 50], [0, 50]]  # percent of width/height
    tasks[0]["annotations"] = [{"result": [{"type": "polygonlabels", "original_width": w, "original_height": h,
                                            "value": {"points": square, "polygonlabels": ["bicycle"]}}]}]
    (tmp_path / "poly.json").write_text(json.dumps(tasks))
    import_(world.ws, world.config, "labelstudio", tmp_path / "poly.json", round_=3)
    label = stored_label(world, image_id)
    assert (label[1 : h // 2 - 1, 1 : w // 2 - 1] == 2).all() and (label[h // 2 + 2 :, :] == 0).all()
    assert tables.LABELS.read(world.ws).to_pylist()[0]["round"] == 3


def test_lsbrush_matches_the_sdk_bit_for_bit():
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (7, 300), (120, 90)]:
        mask = rng.random((h, w)) < 0.3
        mask[: h // 2] = True
        ours = lsbrush.encode_mask(mask)
        assert ours == brush.mask2rle(np.where(mask, 255, 0).astype(np.uint8))
        np.testing.assert_array_equal(lsbrush.decode_mask(ours, h, w), mask)
    long_run = np.zeros(70_000 * 4, dtype=np.uint8)
    assert lsbrush.encode(long_run) == brush.encode_rle(long_run)
    np.testing.assert_array_equal(lsbrush.decode(brush.encode_rle(long_run)), long_run)


def test_coco_rle_decodes_with_pycocotools_and_imports_edits(world, tmp_path):
    out = tmp_path / "coco"
    export(world.ws, world.config, "coco", out, 0)
    doc = json.loads((out / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in doc["categories"]}
    assert sorted(names.values()) == sorted(CLASSES[1:] + [IGNORE_NAME])
    images = {i["id"]: i for i in doc["images"]}
    decoded = {i["image_id"]: np.zeros((i["height"], i["width"]), np.uint8) for i in doc["images"]}
    for ann in doc["annotations"]:
        image = images[ann["image_id"]]
        seg = ann["segmentation"]
        m = mask_util.decode({"size": seg["size"], "counts": seg["counts"].encode()})
        assert ann["area"] == int(m.sum())
        decoded[image["image_id"]][m == 1] = class_of(names[ann["category_id"]])
    for image_id, mask in decoded.items():
        np.testing.assert_array_equal(mask, world.target_maps[image_id])

    # the annotator edits one image: new masks from pycocotools, one polygon, a renumbered category
    target = doc["images"][1]
    target_id = target["image_id"]
    edited = edit(world.target_maps[target_id])
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != target["id"]]
    for value in np.unique(edited).tolist():
        if value == 0:
            continue
        rle = mask_util.encode(np.asfortranarray((edited == value).astype(np.uint8)))
        category = 255 if value == IGNORE else value
        doc["annotations"].append({"id": 900 + value, "image_id": target["id"], "category_id": category, "iscrowd": 1,
                                   "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    doc["categories"].append({"id": 77, "name": "aeroplane"})
    doc["annotations"].append({"id": 999, "image_id": target["id"], "category_id": 77, "iscrowd": 0,
                               "segmentation": [[0, 0, 8, 0, 8, 6, 0, 6]]})
    edited[: 6, : 8] = 1
    poly = mask_util.decode(mask_util.merge(mask_util.frPyObjects([[0, 0, 8, 0, 8, 6, 0, 6]], *edited.shape)))
    edited = np.where(poly == 1, 1, edited)
    for image in doc["images"]:
        image["file_name"] = f"images/{image['file_name']}"
        image.pop("image_id")
    (tmp_path / "instances_default.json").write_text(json.dumps(doc))
    import_(world.ws, world.config, "coco", tmp_path / "instances_default.json", round_=0)
    np.testing.assert_array_equal(stored_label(world, target_id), edited)
    for image_id in world.image_ids:
        if image_id != target_id:
            np.testing.assert_array_equal(stored_label(world, image_id), world.target_maps[image_id])


def test_cvat_masks_decode_with_their_labelmap_and_import_edits(world, tmp_path):
    out = tmp_path / "cvat"
    cli_state.set_config_path(world.config_path)
    try:
        result = CliRunner().invoke(annotate_app, ["export", "--format", "cvat", "--out", str(out), "--round", "0"])
    finally:
        cli_state.set_config_path("madmine.toml")
    assert result.exit_code == 0, result.output
    colors = {}
    for line in (out / "labelmap.txt").read_text().splitlines()[1:]:
        name, rgb, _, _ = line.split(":")
        colors[tuple(int(v) for v in rgb.split(","))] = class_of(name)
    listed = (out / "ImageSets/Segmentation/default.txt").read_text().split()
    assert sorted(listed) == sorted(world.image_ids)
    with zipfile.ZipFile(out / "annotations.zip") as zf:
        assert {"labelmap.txt", "ImageSets/Segmentation/default.txt"} <= set(zf.namelist())
        for image_id in world.image_ids:
            rgb = np.asarray(Image.open(io.BytesIO(zf.read(f"SegmentationClass/{image_id}.png"))).convert("RGB"))
            decoded = np.zeros(rgb.shape[:2], np.uint8)
            for color, class_id in colors.items():
                decoded[(rgb == color).all(axis=2)] = class_id
            np.testing.assert_array_equal(decoded, world.target_maps[image_id])

    # CVAT's export of the finished task: the same layout, one mask repainted, zipped
    by_class = {v: k for k, v in colors.items()}
    edited_id = world.image_ids[2]
    edited = edit(world.target_maps[edited_id])
    lut = np.zeros((256, 3), np.uint8)
    for class_id, color in by_class.items():
        lut[class_id] = color
    done = tmp_path / "task_1-segmentation_mask_1.1.zip"
    with zipfile.ZipFile(out / "annotations.zip") as src, zipfile.ZipFile(done, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == f"SegmentationClass/{edited_id}.png":
                buf = io.BytesIO()
                Image.fromarray(lut[edited], "RGB").save(buf, "PNG")
                data = buf.getvalue()
            dst.writestr(name, data)
    table, _ = import_(world.ws, world.config, "cvat", done, round_=0)
    assert table.num_rows == len(world.image_ids)
    np.testing.assert_array_equal(stored_label(world, edited_id), edited)
    np.testing.assert_array_equal(stored_label(world, world.image_ids[0]), world.target_maps[world.image_ids[0]])
