"""Imports that cannot be trusted fail whole, with messages that say what and where; exports
that cannot be made write nothing."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import numpy as np
import pytest
from label_studio_sdk.converter import brush
from PIL import Image

import rating_world
from madmine import tables
from madmine.steps.annotation.bundle import AnnotationError
from madmine.steps.annotation.exchange import export, import_
from madmine.steps.rating import selection, store
from worlds import drop_map


@pytest.fixture
def world(tmp_path):
    world = rating_world.build(tmp_path / "w", rotated=False)
    for image_id in world.image_ids:
        store.record(world.ws, 0, image_id, "alice", 2)
    chosen = selection.select(store.latest(store.load_events(world.ws, 0)), 0,
                              {i: "" for i in world.image_ids}, n4=6, min_raters=1)
    selection.write(world.ws, 0, chosen)
    return world


def nothing_written(world) -> bool:
    return tables.LABELS.read(world.ws) is None and not world.ws.glob(world.ws.path("labels", "*.png"))


def ls_tasks(world, tmp_path):
    out = tmp_path / "ls"
    export(world.ws, world.config, "labelstudio", out, 0)
    tasks = json.loads((out / "tasks.json").read_text())
    for task in tasks:
        task["annotations"] = [{"result": task["predictions"][0]["result"]}]
    return out, tasks


def test_unknown_class_name_fails_and_imports_nothing(world, tmp_path):
    out, tasks = ls_tasks(world, tmp_path)
    h, w = world.sizes[tasks[3]["data"]["image_id"]]
    zebra = np.zeros((h, w), np.uint8)
    zebra[:5, :5] = 255
    tasks[3]["annotations"][0]["result"].append(
        {"type": "brushlabels", "original_width": w, "original_height": h,
         "value": {"format": "rle", "rle": brush.mask2rle(zebra), "brushlabels": ["zebra"]}}
    )
    (out / "export.json").write_text(json.dumps(tasks))
    with pytest.raises(AnnotationError, match="unknown class name 'zebra'") as info:
        import_(world.ws, world.config, "labelstudio", out / "export.json")
    assert "nothing imported" in str(info.value) and "task" in str(info.value)
    assert nothing_written(world)


def test_wrong_size_fails_and_imports_nothing(world, tmp_path):
    out, tasks = ls_tasks(world, tmp_path)
    for result in tasks[1]["annotations"][0]["result"]:
        result["original_width"] += 1
    (out / "export.json").write_text(json.dumps(tasks))
    with pytest.raises(AnnotationError, match="wrong size"):
        import_(world.ws, world.config, "labelstudio", out / "export.json")
    assert nothing_written(world)

    out = tmp_path / "coco"
    export(world.ws, world.config, "coco", out, 0)
    doc = json.loads((out / "annotations.json").read_text())
    doc["images"][0]["height"] += 2
    (out / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(AnnotationError, match="wrong size"):
        import_(world.ws, world.config, "coco", out)
    assert nothing_written(world)


def test_missing_images_fail_and_import_nothing(world, tmp_path):
    out = tmp_path / "cvat"
    export(world.ws, world.config, "cvat", out, 0)
    stranger = "ee" * 16
    shutil.copy(out / "SegmentationClass" / f"{world.image_ids[0]}.png", out / "SegmentationClass" / f"{stranger}.png")
    with pytest.raises(AnnotationError, match=f"image '.*{stranger}.png' is not in the export's madmine-export.json"):
        import_(world.ws, world.config, "cvat", out)
    assert nothing_written(world)

    (out / "SegmentationClass" / f"{stranger}.png").unlink()
    (out / "SegmentationClass" / f"{world.image_ids[1]}.png").unlink()
    with pytest.raises(AnnotationError, match="no finished annotation"):
        import_(world.ws, world.config, "cvat", out, require_all=True)
    assert nothing_written(world)
    table, _ = import_(world.ws, world.config, "cvat", out)
    assert table.num_rows == len(world.image_ids) - 1


def test_without_the_export_record_images_are_matched_in_the_manifest(world, tmp_path):
    out = tmp_path / "coco"
    export(world.ws, world.config, "coco", out, 0)
    (out / "madmine-export.json").unlink()
    doc = json.loads((out / "annotations.json").read_text())
    doc["images"][0]["file_name"] = "uploads/1a2b3c4d-" + doc["images"][0]["file_name"]
    doc["images"][1]["file_name"] = "nobody.png"
    for image in doc["images"]:
        image.pop("image_id")
    (out / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(AnnotationError, match="'nobody.png' is not in the workspace manifest"):
        import_(world.ws, world.config, "coco", out)
    assert nothing_written(world)
    dropped = doc["images"].pop(1)["id"]
    (out / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(AnnotationError, match=f"refer to image id {dropped}, which is not in 'images'"):
        import_(world.ws, world.config, "coco", out)
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != dropped]
    (out / "annotations.json").write_text(json.dumps(doc))
    table, _ = import_(world.ws, world.config, "coco", out, round_=0)
    assert table.num_rows == len(world.image_ids) - 1 and world.image_ids[0] in table.column("image_id").to_pylist()


def test_unknown_colour_or_label_in_cvat_fails(world, tmp_path):
    out = tmp_path / "cvat"
    export(world.ws, world.config, "cvat", out, 0)
    path = out / "SegmentationClass" / f"{world.image_ids[0]}.png"
    rgb = np.asarray(Image.open(path).convert("RGB")).copy()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(path)
    with pytest.raises(AnnotationError, match=r"colours \(1,2,3\) are not in labelmap.txt"):
        import_(world.ws, world.config, "cvat", out)
    labelmap = (out / "labelmap.txt").read_text()
    (out / "labelmap.txt").write_text(labelmap + "horse:9,9,9::\n")
    with pytest.raises(AnnotationError, match="unknown class name 'horse'"):
        import_(world.ws, world.config, "cvat", out)
    assert nothing_written(world)


def test_one_bad_image_among_good_ones_imports_nothing(world, tmp_path):
    out = tmp_path / "coco"
    export(world.ws, world.config, "coco", out, 0)
    doc = json.loads((out / "annotations.json").read_text())
    doc["annotations"][-1]["segmentation"]["size"] = [3, 3]
    (out / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(AnnotationError, match="1 problem"):
        import_(world.ws, world.config, "coco", out / "annotations.json")
    assert nothing_written(world)


def test_exports_refuse_what_they_cannot_do_cleanly(world, tmp_path):
    with pytest.raises(AnnotationError, match="unknown format"):
        export(world.ws, world.config, "yolo", tmp_path / "x", 0)
    with pytest.raises(AnnotationError, match="no 'test' set for round 0"):
        export(world.ws, world.config, "coco", tmp_path / "t", 0, which="test")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "old.json").write_text("{}")
    with pytest.raises(AnnotationError, match="not empty"):
        export(world.ws, world.config, "coco", busy, 0)
    drop_map(world.ws, "target", "t-v1", world.image_ids[2])
    with pytest.raises(AnnotationError, match=f"{world.image_ids[2]}: no stored map"):
        export(world.ws, world.config, "coco", tmp_path / "fresh", 0)
    assert not (tmp_path / "fresh").exists()
    with pytest.raises(AnnotationError, match="does not exist"):
        import_(world.ws, world.config, "coco", tmp_path / "nowhere")


def test_cvat_zip_from_a_subfolder_is_read(world, tmp_path):
    out = tmp_path / "cvat"
    export(world.ws, world.config, "cvat", out, 0)
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(out / "annotations.zip") as src, zipfile.ZipFile(nested, "w") as dst:
        for name in src.namelist():
            dst.writestr(f"task_7/{name}", src.read(name))
    table, _ = import_(world.ws, world.config, "cvat", nested, round_=0)
    assert table.num_rows == len(world.image_ids)
    label = world.ws.get_bytes(world.ws.path("labels", f"{world.image_ids[0]}.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(label))), world.target_maps[world.image_ids[0]])


def test_labelstudio_min_csv_and_zip_exports_are_named(world, tmp_path):
    out, tasks = ls_tasks(world, tmp_path)
    json_min = [{"image": t["data"]["image"], "id": n + 1, "label": [], "annotator": 1, "annotation_id": n + 1,
                 "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "lead_time": 3.2}
                for n, t in enumerate(tasks)]
    (out / "project-1-at-min.json").write_text(json.dumps(json_min))
    with pytest.raises(AnnotationError, match="this is Label Studio's JSON-MIN export.*Export -> JSON"):
        import_(world.ws, world.config, "labelstudio", out / "project-1-at-min.json")
    (out / "project-1.csv").write_text("image,id,label,annotator,annotation_id\n/data/x.png,1,[],1,1\n")
    with pytest.raises(AnnotationError, match="this is Label Studio's CSV export"):
        import_(world.ws, world.config, "labelstudio", out / "project-1.csv")
    (out / "project-1.zip").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(AnnotationError, match="this is a zip"):
        import_(world.ws, world.config, "labelstudio", out / "project-1.zip")
    (out / "project-1-at-min.json").unlink()
    with pytest.raises(AnnotationError, match=r"found \[\].*export as JSON instead"):
        import_(world.ws, world.config, "labelstudio", out)
    assert nothing_written(world)


def test_labelstudio_round_comes_from_the_tasks_or_is_reported_unknown(world, tmp_path):
    from typer.testing import CliRunner

    from madmine.cli import state as cli_state
    from madmine.cli.annotate import annotate_app

    out, tasks = ls_tasks(world, tmp_path)
    (out / "madmine-export.json").unlink()  # the user kept only the download
    (tmp_path / "named.json").write_text(json.dumps(tasks[:2]))
    table, _ = import_(world.ws, world.config, "labelstudio", tmp_path / "named.json")
    assert table.column("round").to_pylist() == [0, 0]
    for task in tasks:  # tasks made by hand, or by an older madmine: no round in them
        for key in ("madmine_round", "madmine_set", "madmine_export"):
            task["data"].pop(key)
    (tmp_path / "anonymous.json").write_text(json.dumps(tasks[2:4]))
    cli_state.set_config_path(world.config_path)
    try:
        result = CliRunner().invoke(annotate_app, ["import", "--format", "labelstudio", str(tmp_path / "anonymous.json")])
    finally:
        cli_state.set_config_path("madmine.toml")
    assert result.exit_code == 0, result.output
    assert "imported 2 label masks" in result.output and "the round of these labels is unknown" in result.output
    rows = tables.LABELS.read(world.ws).to_pylist()
    assert sorted(r["round"] for r in rows if r["round"] is not None) == [0, 0] and sum(r["round"] is None for r in rows) == 2


def test_labelstudio_export_of_another_round_is_refused(world, tmp_path):
    out, tasks = ls_tasks(world, tmp_path)
    for task in tasks:
        task["data"].update(madmine_export="0123456789ab", madmine_round=4)
    (out / "export.json").write_text(json.dumps(tasks))
    with pytest.raises(AnnotationError, match=r"another project's export: .*export 0123456789ab \(round 4"):
        import_(world.ws, world.config, "labelstudio", out / "export.json")
    for task in tasks:
        for key in ("madmine_round", "madmine_set", "madmine_export"):
            task["data"].pop(key)
        task["data"]["image"] = task["data"]["image"].replace("ab", "cd")
        task["data"]["image_id"] = task["data"]["image_id"].replace("ab", "cd")
    (out / "export.json").write_text(json.dumps(tasks))
    with pytest.raises(AnnotationError, match="none of its 6 tasks shows an image"):
        import_(world.ws, world.config, "labelstudio", out / "export.json")
    assert nothing_written(world)


def test_labelstudio_prefixes_follow_the_folder_and_refuse_a_root_below_it(world, tmp_path):
    export(world.ws, world.config, "labelstudio", tmp_path / "rounds" / "r0 s", 0)
    tasks = json.loads((tmp_path / "rounds" / "r0 s" / "tasks.json").read_text())
    assert all(t["data"]["image"].startswith("/data/local-files/?d=r0%20s/images/") for t in tasks)
    readme = (tmp_path / "rounds" / "r0 s" / "README.md").read_text()
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={tmp_path / 'rounds'}" in readme and "JSON-MIN" in readme
    export(world.ws, world.config, "labelstudio", tmp_path / "deep" / "a" / "b", 0, document_root=tmp_path / "deep")
    tasks = json.loads((tmp_path / "deep" / "a" / "b" / "tasks.json").read_text())
    assert all(t["data"]["image"].startswith("/data/local-files/?d=a/b/images/") for t in tasks)
    with pytest.raises(AnnotationError, match="is not inside the document root"):
        export(world.ws, world.config, "labelstudio", tmp_path / "x", 0, document_root=tmp_path / "x" / "below")
    assert not (tmp_path / "x").exists()


def test_labelstudio_annotations_without_a_brush_region_are_named_and_not_imported(world, tmp_path, caplog):
    """A submitted annotation whose only region is a rectangle, or that holds no region at all,
    is never read as an all-background mask: it is named, and the others import."""
    out, tasks = ls_tasks(world, tmp_path)
    rect_id, empty_id = tasks[0]["data"]["image_id"], tasks[1]["data"]["image_id"]
    h, w = world.sizes[rect_id]
    tasks[0]["annotations"] = [{"result": [{"type": "rectanglelabels", "original_width": w, "original_height": h,
                                            "value": {"x": 10, "y": 10, "width": 50, "height": 50,
                                                      "rectanglelabels": ["bird"]}}]}]
    tasks[1]["annotations"] = [{"result": []}]
    (out / "export.json").write_text(json.dumps(tasks))
    with caplog.at_level("WARNING"):
        table, unfinished = import_(world.ws, world.config, "labelstudio", out / "export.json")
    assert sorted(table.column("image_id").to_pylist()) == sorted(t["data"]["image_id"] for t in tasks[2:])
    assert unfinished == 2
    for image_id in (rect_id, empty_id):
        assert not world.ws.exists(world.ws.path("labels", f"{image_id}.png"))
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert f"image {rect_id} (" in warning and "only rectanglelabels regions" in warning
    assert f"image {empty_id} (" in warning and "submitted with no region" in warning
    only_empty = tmp_path / "only-empty.json"
    only_empty.write_text(json.dumps(tasks[:2]))
    with pytest.raises(AnnotationError, match=r"holds no finished annotation \(2 submitted annotation\(s\) hold no brush"):
        import_(world.ws, world.config, "labelstudio", only_empty)


def test_labelstudio_small_messages_say_what_is_missing(world, tmp_path):
    out, tasks = ls_tasks(world, tmp_path)
    del tasks[0]["annotations"][0]["result"][0]["value"]["rle"]
    (out / "export.json").write_text(json.dumps(tasks))
    with pytest.raises(AnnotationError) as info:
        import_(world.ws, world.config, "labelstudio", out / "export.json")
    assert "a brushlabels region without its 'rle' field" in str(info.value)
    assert "unreadable region ('rle')" not in str(info.value)
    tasks = json.loads((out / "tasks.json").read_text())
    for task in tasks[1:]:
        task["annotations"] = [{"result": task["predictions"][0]["result"]}]
    (out / "export.json").write_text(json.dumps(tasks))
    with pytest.raises(AnnotationError) as info:
        import_(world.ws, world.config, "labelstudio", out / "export.json", require_all=True)
    text = str(info.value)
    assert f"image {tasks[0]['data']['image_id']} of the export has no finished annotation (unlabelled; --require-all)" in text
    assert "missing image" not in text
