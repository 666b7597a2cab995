"""Fuzzing the image boundary: every input gives an image or an ImageError, never another
exception, within a bounded time and memory.

Two sources of inputs, both seeded so that CI runs the same cases every time: the mutated
corpus of tests/support/fuzz_corpus.py (every format Pillow opens, bit flips, truncation at
every structural boundary, patched dimensions and lengths, appended garbage, polyglots), and
hypothesis (derandomized, a bounded number of examples) over arbitrary bytes and over edits
of valid files.
"""

from __future__ import annotations

import resource
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import fuzz_corpus
from madmine.images import ImageError, decode, probe

pytestmark = [
    pytest.mark.usefixtures("memory_ceiling"),  # a memory bomb fails the test, not the machine
    pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning"),
]

SEED = 20261129
MAX_PIXELS = 4_000_000
TIMEOUT_S = 2.0
SLACK_S = 3.0  # thread start and scheduling on a busy 2-core machine: the limit, not the decoder, bounds a call
MAX_RSS_GROWTH = 512 << 20
REASONS = {
    "empty file", "not an image", "corrupt header", "truncated or corrupt image data", "decompression bomb",
    "image too small", "decode timed out", "decode failed",
}  # not "too large to decode": under the memory ceiling that is how a memory bomb shows
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def check(data: bytes) -> list[str]:
    """Run probe and decode on `data`; the list of broken promises (empty when all held)."""
    broken = []
    calls = {
        "probe": lambda: probe(data, max_pixels=MAX_PIXELS, timeout_s=TIMEOUT_S),
        "decode": lambda: decode(data, max_pixels=MAX_PIXELS, timeout_s=TIMEOUT_S),  # probe decodes with a draft
    }
    for name, call in calls.items():
        started = time.monotonic()
        try:
            out = call()
        except ImageError as exc:
            if exc.reason not in REASONS or "\n" in exc.reason:
                broken.append(f"{name}: unexpected reason {exc.reason!r}")
        except BaseException as exc:  # noqa: BLE001 - exactly what the boundary must never let through
            broken.append(f"{name}: {type(exc).__name__}: {exc}")
        else:
            img = out[0] if name == "probe" else out
            if not isinstance(img, Image.Image) or img.mode != "RGB" or min(img.size) < 1:
                broken.append(f"{name}: returned {img!r}")
            elif name == "probe" and out[1] * out[2] > MAX_PIXELS:
                broken.append(f"{name}: {out[1]}x{out[2]} over max_pixels")
        if time.monotonic() - started > TIMEOUT_S + SLACK_S:
            broken.append(f"{name}: took {time.monotonic() - started:.1f} s")
    return broken


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, bytes]]:
    return list(fuzz_corpus.cases(SEED))


def test_the_corpus_covers_every_format_pillow_opens(corpus):
    Image.init()
    formats = {fuzz_corpus.identify(data) for name, data in corpus if "/" not in name}
    assert {f.upper() for f in formats if f} >= set(Image.OPEN) | {"MPO"}
    kinds = {name.split("/", 1)[1].rstrip("0123456789=-").split("=")[0] for name, _ in corpus if "/" in name}
    assert {"flip", "cut", "ihdr", "sof", "bmp", "tiff", "IDAT-len", "jpegdb-len", "riff-len", "garbage-small",
            "two-images", "plus-zip", "pdf-header", "gif-script", "jpeg-html-comment"} <= kinds
    assert len(corpus) > 2000


def test_every_mutated_image_gives_an_image_or_an_image_error(corpus):
    before = peak_rss()
    failures = {}
    for name, data in corpus:
        broken = check(data)
        if broken:
            failures[name] = broken
    assert not failures, f"{len(failures)} inputs broke the boundary: " + repr(dict(list(failures.items())[:20]))
    assert peak_rss() - before < MAX_RSS_GROWTH


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes(data):
    assert check(data) == []


@FUZZ
@given(st.data())
def test_arbitrary_edits_of_valid_files(data):
    seeds = fuzz_corpus.seeds()
    name = data.draw(st.sampled_from(sorted(seeds)), label="seed")
    blob = bytearray(seeds[name])
    for _ in range(data.draw(st.integers(1, 6), label="edits")):
        if not blob:
            break
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "repeat"]))
        at = data.draw(st.integers(0, len(blob) - 1))
        if op == "flip":
            blob[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            blob[at : at + 4] = data.draw(st.sampled_from([b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff"]))
        elif op == "insert":
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del blob[at : at + data.draw(st.integers(1, 64))]
        elif op == "truncate":
            del blob[at:]
        else:
            blob[at:at] = blob[at : at + data.draw(st.integers(1, 256))] * data.draw(st.integers(2, 8))
    assert check(bytes(blob)) == []
