"""Fuzzing mask imports (Label Studio brush RLE and polygons, CVAT PNG masks, COCO RLE and
polygons): whatever the tool's export holds, an import either imports or fails with one
AnnotationError, never another exception, within a bounded time and memory.

The exports are madmine's own (so every file starts valid); hypothesis (derandomized, a
bounded number of examples) then replaces parts of them with hostile values.
"""

from __future__ import annotations

import copy
import json
import resource
import shutil
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_corpus
import rating_world
from madmine.steps.annotation import lsbrush
from madmine.steps.annotation.bundle import AnnotationError
from madmine.steps.annotation.coco import decode as coco_decode
from madmine.steps.annotation.exchange import export, import_
from madmine.steps.rating import selection, store

pytestmark = [
    pytest.mark.usefixtures("memory_ceiling"),  # a memory bomb fails the test, not the machine
    pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning"),
]

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=60,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
SLOW_S = 10.0
MAX_RSS_GROWTH = 512 << 20

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=12,
)
# values that have broken decoders before: huge counts, negatives, NaN, wrong types
HOSTILE = st.one_of(
    JSON,
    st.lists(st.integers(-5, 2**40), max_size=30),
    st.lists(st.floats(), min_size=0, max_size=12),
    st.text(alphabet="0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmno", max_size=60),
    st.sampled_from([2**31, 2**32 + 5, -1, float("nan"), float("inf"), "", [], {}, [[]], [[0, 0, 1e308, 1e308, 5, 5]]]),
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A world with S = every image, and its export in each tool's format."""
    root = tmp_path_factory.mktemp("fuzz")
    world = rating_world.build(root / "w", rotated=False)
    for image_id in world.image_ids:
        store.record(world.ws, 0, image_id, "alice", 2)
    chosen = selection.select(store.latest(store.load_events(world.ws, 0)), 0, {i: "" for i in world.image_ids},
                              n4=6, min_raters=1)
    selection.write(world.ws, 0, chosen)
    out = {}
    for fmt in ("labelstudio", "cvat", "coco"):
        export(world.ws, world.config, fmt, root / fmt, 0)
        out[fmt] = root / fmt
    return world, out


def attempt(world, fmt: str, path) -> str | None:
    """Import; None when the promise held (imported, or one AnnotationError), else what broke."""
    started = time.monotonic()
    try:
        import_(world.ws, world.config, fmt, path)
    except AnnotationError as exc:
        if not str(exc):
            return "an empty AnnotationError"
        if "MemoryError" in str(exc) or "too large to decode" in str(exc):
            return f"a memory bomb: {str(exc)[:300]}"
    except BaseException as exc:  # noqa: BLE001 - what the boundary must never let through
        return f"{type(exc).__name__}: {exc}"
    if time.monotonic() - started > SLOW_S:
        return f"took {time.monotonic() - started:.1f} s"
    return None


def replace_somewhere(doc, data, value_strategy=HOSTILE):
    """Replace (or delete) one node of a JSON document chosen by hypothesis."""
    doc = copy.deepcopy(doc)
    node = doc
    for _ in range(data.draw(st.integers(0, 7), label="depth")):
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if isinstance(node, list) else []
        children = [(k, v) for k, v in children if isinstance(v, (dict, list)) and v]
        if not children:
            break
        _, node = data.draw(st.sampled_from(children))
    keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
    if keys:
        key = data.draw(st.sampled_from(keys))
        if data.draw(st.integers(0, 4)) == 0:
            del node[key]
        else:
            node[key] = data.draw(value_strategy)
    return doc


def workdir(tmp_path_factory, src):
    dst = tmp_path_factory.mktemp("case")
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


def test_the_exports_import_as_they_are(exported, tmp_path_factory):
    world, paths = exported
    tasks = json.loads((paths["labelstudio"] / "tasks.json").read_text())
    for task in tasks:
        task["annotations"] = [{"result": task["predictions"][0]["result"]}]
    ls = workdir(tmp_path_factory, paths["labelstudio"])
    (ls / "export.json").write_text(json.dumps(tasks))
    assert import_(world.ws, world.config, "labelstudio", ls / "export.json")[0].num_rows == 6
    assert import_(world.ws, world.config, "cvat", paths["cvat"] / "annotations.zip")[0].num_rows == 6
    assert import_(world.ws, world.config, "coco", paths["coco"])[0].num_rows == 6


@FUZZ
@given(data=st.data())
def test_label_studio_exports(exported, tmp_path_factory, data):
    world, paths = exported
    tasks = json.loads((paths["labelstudio"] / "tasks.json").read_text())
    for task in tasks:
        task["annotations"] = [{"result": task["predictions"][0]["result"]}]
    result = tasks[data.draw(st.integers(0, len(tasks) - 1))]["annotations"][0]["result"]
    if result and data.draw(st.booleans()):
        region = result[data.draw(st.integers(0, len(result) - 1))]
        rle = region["value"]["rle"]
        at = data.draw(st.integers(0, len(rle) - 1))
        region["value"]["rle"] = rle[:at] + data.draw(st.lists(st.integers(0, 255), max_size=8)) + rle[at + 1 :]
        if data.draw(st.booleans()):  # the declared count: the 32 bits a bomb would set
            region["value"]["rle"][:4] = list(data.draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big"))
    if data.draw(st.booleans()):
        polygon = {"type": "polygonlabels", "value": {"points": data.draw(HOSTILE), "polygonlabels": ["bird"]}}
        tasks[0]["annotations"][0]["result"].append(polygon)
    tasks = replace_somewhere(tasks, data) if data.draw(st.booleans()) else tasks
    folder = workdir(tmp_path_factory, paths["labelstudio"])
    (folder / "export.json").write_text(json.dumps(tasks))
    assert attempt(world, "labelstudio", folder / "export.json") is None


@FUZZ
@given(data=st.data())
def test_coco_exports(exported, tmp_path_factory, data):
    world, paths = exported
    doc = json.loads((paths["coco"] / "annotations.json").read_text())
    ann = doc["annotations"][data.draw(st.integers(0, len(doc["annotations"]) - 1))]
    choice = data.draw(st.integers(0, 3))
    if choice == 0:
        ann["segmentation"]["counts"] = data.draw(HOSTILE)
    elif choice == 1:
        ann["segmentation"] = data.draw(HOSTILE)
    elif choice == 2:
        ann["segmentation"] = data.draw(st.lists(st.lists(st.floats() | st.integers(-(2**40), 2**40), max_size=12), max_size=3))
    else:
        doc = replace_somewhere(doc, data)
    folder = workdir(tmp_path_factory, paths["coco"])
    (folder / "annotations.json").write_text(json.dumps(doc))
    assert attempt(world, "coco", folder) is None


def test_cvat_masks_from_the_image_corpus(exported, tmp_path_factory):
    """Every mask PNG of the export replaced, in turn, by each mutation of a real mask."""
    world, paths = exported
    folder = workdir(tmp_path_factory, paths["cvat"])
    (folder / "annotations.zip").unlink()
    masks = sorted((folder / "SegmentationClass").glob("*.png"))
    original = masks[0].read_bytes()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    failures = {}
    for kind, mutated in fuzz_corpus.mutations("mask", original, np.random.default_rng(11)):
        masks[0].write_bytes(mutated)
        broken = attempt(world, "cvat", folder)
        if broken:
            failures[kind] = broken
    assert not failures, repr(dict(list(failures.items())[:10]))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before < MAX_RSS_GROWTH


@FUZZ
@given(data=st.data())
def test_cvat_exports(exported, tmp_path_factory, data):
    world, paths = exported
    folder = workdir(tmp_path_factory, paths["cvat"])
    (folder / "annotations.zip").unlink()
    if data.draw(st.booleans()):
        mask = sorted((folder / "SegmentationClass").glob("*.png"))[0]
        mask.write_bytes(data.draw(st.binary(max_size=512)))
    else:
        (folder / "labelmap.txt").write_bytes(data.draw(st.binary(max_size=300)) if data.draw(st.booleans())
                                               else data.draw(st.text(max_size=300)).encode("utf-8", "surrogatepass"))
    assert attempt(world, "cvat", folder) is None


@FUZZ
@given(rle=st.lists(st.integers(0, 255), max_size=64), height=st.integers(1, 40), width=st.integers(1, 40))
def test_brush_rle_decodes_or_is_refused_before_allocating(rle, height, width):
    try:
        mask = lsbrush.decode_mask(rle, height, width)
    except ValueError as exc:  # MemoryError (a bomb, under the ceiling) is not caught: it fails the test
        assert str(exc), "a refusal says why"
        return
    assert mask.shape == (height, width) and mask.dtype == bool


def test_a_brush_rle_that_declares_four_billion_values_is_refused_at_once():
    bomb = list((2**32 - 1).to_bytes(4, "big")) + [0b00111111, 0xFF] + [0xFF] * 4096  # then repeat chunks
    started = time.monotonic()
    with pytest.raises(ValueError, match="values"):
        lsbrush.decode_mask(bomb, 10, 10)
    assert time.monotonic() - started < 5


@FUZZ
@given(segmentation=HOSTILE, height=st.integers(1, 30), width=st.integers(1, 30))
def test_coco_segmentations_decode_or_are_refused(segmentation, height, width):
    try:
        mask = coco_decode(segmentation, height, width)
    except (ValueError, TypeError, KeyError) as exc:
        assert str(exc), "a refusal says why"
        return
    assert mask.shape == (height, width) and mask.dtype == bool


def test_a_coco_rle_longer_than_the_image_is_refused_not_written_past_its_buffer():
    """pycocotools decodes run lengths without checking their sum: 10 x 10 pixels with
    runs summing to 10**6 would write far past its buffer."""
    with pytest.raises(ValueError, match="wrong size"):
        coco_decode({"size": [10, 10], "counts": [0, 10**6]}, 10, 10)
    with pytest.raises(ValueError, match="wrong size"):
        coco_decode({"size": [10, 10], "counts": "0" + "o" * 6 + "1"}, 10, 10)
