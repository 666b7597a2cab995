"""Fuzzing precomputed-map PNGs (maps models): every file gives a valid class map or an
ImageError for that image, never another exception, within a bounded time."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import fuzz_corpus
from madmine.images import ImageError, decode_map_png
from madmine.models.maps import MapsFolder

pytestmark = [
    pytest.mark.usefixtures("memory_ceiling"),  # a memory bomb fails the test, not the machine
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
]

NUM_CLASSES = 4
TIMEOUT_S = 2.0
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


def map_seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, NUM_CLASSES, (14, 20)).astype(np.uint8)
    labels[0, :3] = 255
    out = {}
    for name, img in {
        "L": Image.fromarray(labels, "L"),
        "P": Image.fromarray(labels, "P"),
        "I16": Image.fromarray(labels.astype(np.uint16)),
        "1": Image.fromarray(labels > 1),
        "RGB": Image.fromarray(np.dstack([labels] * 3)),
    }.items():
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out[name] = buf.getvalue()
    return out


def check(folder: MapsFolder, root, data: bytes) -> list[str]:
    (root / "x.png").write_bytes(data)
    started = time.monotonic()
    broken = []
    try:
        labels = folder.load("s3://corpus/photos/x.jpg")
    except ImageError as exc:
        if not exc.reason or "\n" in exc.reason or exc.reason == "too large to decode":
            broken.append(f"bad reason {exc.reason!r}")
    except BaseException as exc:  # noqa: BLE001 - what the boundary must never let through
        broken.append(f"{type(exc).__name__}: {exc}")
    else:
        if labels.dtype != np.uint8 or labels.ndim != 2:
            broken.append(f"a {labels.dtype} map of shape {labels.shape}")
        elif ((labels >= NUM_CLASSES) & (labels != 255)).any():
            broken.append("unknown class ids let through")
    if time.monotonic() - started > TIMEOUT_S + 3:
        broken.append("too slow")
    return broken


@pytest.fixture
def folder(tmp_path):
    return tmp_path, MapsFolder(str(tmp_path), NUM_CLASSES, timeout_s=TIMEOUT_S, max_pixels=1_000_000)


def test_valid_maps_load(folder):
    root, maps = folder
    for name, data in map_seeds().items():
        (root / "x.png").write_bytes(data)
        if name in ("RGB", "1"):  # colours, or bits: not class ids
            with pytest.raises(ImageError, match="not a class-index map"):
                maps.load("x.jpg")
        else:
            assert maps.load("x.jpg").shape == (14, 20)


def test_every_mutated_map_gives_a_map_or_an_image_error(folder):
    root, maps = folder
    rng = np.random.default_rng(20261129)
    failures = {}
    for name, data in map_seeds().items():
        for kind, mutated in fuzz_corpus.mutations(name, data, rng):
            broken = check(maps, root, mutated)
            if broken:
                failures[f"{name}/{kind}"] = broken
    assert not failures, repr(dict(list(failures.items())[:20]))


@FUZZ
@given(data=st.data())
def test_arbitrary_map_bytes_and_edits(folder, data):
    root, maps = folder
    if data.draw(st.booleans(), label="from scratch"):
        blob = bytearray(data.draw(st.binary(max_size=2048)))
    else:
        seeds = map_seeds()
        blob = bytearray(seeds[data.draw(st.sampled_from(sorted(seeds)))])
        for _ in range(data.draw(st.integers(1, 5))):
            if not blob:
                break
            at = data.draw(st.integers(0, len(blob) - 1))
            if data.draw(st.booleans()):
                blob[at] ^= 1 << data.draw(st.integers(0, 7))
            else:
                blob[at : at + 4] = data.draw(st.binary(min_size=4, max_size=4))
    assert check(maps, root, bytes(blob)) == []


def test_decode_map_png_over_the_image_corpus():
    """Map decoding meets every format of the image corpus too (a maps folder can hold anything)."""
    failures = {}
    for name, data in fuzz_corpus.cases(7, flips=1):
        if "/" in name and "cut" not in name and "flip" not in name:
            continue  # the seeds as written, cut and flipped: the rest is the image test's
        try:
            decode_map_png(data, max_pixels=1_000_000, timeout_s=TIMEOUT_S)
        except ImageError as exc:
            if exc.reason == "too large to decode":
                failures[name] = exc.detail
        except BaseException as exc:  # noqa: BLE001
            failures[name] = f"{type(exc).__name__}: {exc}"
    assert not failures, repr(dict(list(failures.items())[:20]))
