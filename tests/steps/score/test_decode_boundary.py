"""Scoring's inputs through the untrusted-bytes boundary: the decode stage's fetch and the maps
folders of precomputed predictions. A bad input is that image's error row, never a hang or a
crash of the batch."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

import bounded
from fuzz_corpus import corrupt_idat_png
from madmine.images import ImageError
from madmine.models.maps import MapsFolder
from madmine.untrusted import Limits
from worlds import _png_with_declared_size, write_corpus


def test_the_decode_stage_refuses_fifos_devices_and_oversized_files(tmp_path):
    good = write_corpus(tmp_path / "corpus", 2)
    fifo = tmp_path / "corpus" / "pipe.png"
    os.mkfifo(fifo)
    (tmp_path / "corpus" / "zero.png").symlink_to("/dev/zero")
    big = tmp_path / "corpus" / "big.png"
    big.write_bytes(good[0].read_bytes() + bytes(50_000))
    uris = [str(p) for p in good] + [str(fifo), str(tmp_path / "corpus" / "zero.png"), str(big)]
    try:
        result = bounded.python(
            f"""
            import json
            import numpy as np
            from madmine.steps.score.decode import decode_batch
            uris = {uris!r}
            batch = {{"image_id": np.array([f"i{{k}}" for k in range(len(uris))], dtype=object),
                      "uri": np.array(uris, dtype=object), "shard": np.array(["s"] * len(uris), dtype=object)}}
            from madmine.untrusted import Limits
            out = decode_batch(batch, sizes=(16,), limits=Limits(max_bytes=40_000))
            print(json.dumps(list(out["error"])))
            """,
            timeout=60,
        )
    finally:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert result.returncode == 0, result.stderr[-2000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert errors == ["", "", "not a regular file", "not a regular file", "file too large"]


@pytest.fixture
def maps_folder(tmp_path):
    folder = tmp_path / "maps"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 3, (12, 16)).astype(np.uint8), "L").save(folder / "good.png")
    Image.fromarray(rng.integers(0, 3, (12, 16, 3)).astype(np.uint8), "RGB").save(folder / "rgb.png")
    (folder / "corrupt.png").write_bytes(corrupt_idat_png())
    (folder / "bomb.png").write_bytes(_png_with_declared_size(60000, 60000))
    (folder / "text.png").write_bytes(b"not a png at all" * 10)
    (folder / "empty.png").write_bytes(b"")
    (folder / "dir.png").mkdir()
    (folder / "zero.png").symlink_to("/dev/zero")
    return folder


def test_every_bad_map_is_that_images_error(maps_folder):
    folder = MapsFolder(str(maps_folder), num_classes=3)
    assert folder.load("/corpus/good.jpg").shape == (12, 16)
    expected = {
        "rgb": "not a class-index map",
        "corrupt": "truncated or corrupt image data",
        "bomb": "decompression bomb",
        "text": "not an image",
        "empty": "empty file",
        "dir": "map not a regular file",
        "zero": "map not a regular file",
        "missing": "no precomputed map",
    }
    for stem, reason in expected.items():
        with pytest.raises(ImageError) as info:
            folder.load(f"s3://bucket/images/{stem}.jpg")
        assert info.value.reason == reason, stem
        assert stem in info.value.detail


def test_maps_over_max_bytes_are_refused(maps_folder):
    folder = MapsFolder(str(maps_folder), num_classes=3, max_bytes=1024)
    (maps_folder / "large.png").write_bytes((maps_folder / "good.png").read_bytes() + bytes(2048))
    with pytest.raises(ImageError) as info:
        folder.load("x/large.png")
    assert info.value.reason == "map file too large"


def test_an_image_whose_decoder_hangs_is_that_images_error_and_the_batch_goes_on(tmp_path, monkeypatch):
    from madmine.steps.score import decode as stage

    uris = [str(p) for p in write_corpus(tmp_path / "corpus", 6)]
    release = threading.Event()
    real = stage.decode

    def hangs_on_the_third(data, **kwargs):
        if data == open(uris[2], "rb").read():
            release.wait(30)
        return real(data, **kwargs)

    monkeypatch.setattr(stage, "decode", hangs_on_the_third)
    batch = {"image_id": np.array([f"i{k}" for k in range(6)], dtype=object), "uri": np.array(uris, dtype=object),
             "shard": np.array(["s"] * 6, dtype=object)}
    started = time.monotonic()
    out = stage.decode_batch(batch, sizes=(16,), threads=2, limits=Limits(decode_timeout_s=0.5))
    took = time.monotonic() - started
    release.set()
    assert list(out["error"]) == ["", "", "decode timed out", "", "", ""]
    assert took < 10
    reference = np.asarray(Image.open(uris[0]).convert("RGB").resize((16, 16), Image.BILINEAR))
    assert np.array_equal(out["pixels_16"][0], reference)
    assert not out["pixels_16"][2].any()
