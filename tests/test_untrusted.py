"""The untrusted-bytes boundary: what is read (regular files up to max_bytes, locally and on
S3), and what decoding may do (give a result or an ImageError, within a time limit)."""

from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

import bounded
from madmine import images
from madmine.images import ImageError, decode, decode_map_png, probe
from madmine.untrusted import guarded, guarded_map, read_bytes, read_local


def png(shape=(20, 30, 3)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(shape, 7, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_regular_files_are_read_whole_and_others_refused(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png())
    assert read_bytes(str(path)) == read_bytes(f"file://{path}") == path.read_bytes()
    assert read_local(str(path), max_bytes=path.stat().st_size) == path.read_bytes()
    cases = {
        str(tmp_path): "not a regular file",
        str(tmp_path / "missing.png"): "file not found",
        "/dev/null": "not a regular file",
        str(tmp_path / "bad\x00name.png"): "unreadable",
    }
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    cases[str(loop)] = "unreadable"
    for uri, reason in cases.items():
        with pytest.raises(ImageError) as info:
            read_bytes(uri)
        assert info.value.reason == reason, uri
    with pytest.raises(ImageError, match="over max_bytes=10") as info:
        read_bytes(str(path), max_bytes=10)
    assert info.value.reason == "file too large"


def test_a_fifo_and_dev_zero_are_refused_without_reading(tmp_path):
    """In a bounded child: reading either would block forever or grow until the memory limit."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    try:
        result = bounded.python(
            f"""
            from madmine.untrusted import ImageError, read_bytes
            for uri in ({str(fifo)!r}, "/dev/zero"):
                try:
                    read_bytes(uri)
                except ImageError as exc:
                    print(exc.reason, "|", exc.detail)
            """,
            timeout=30,
            memory=1 << 30,
        )
    finally:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines == [
        f"not a regular file | {fifo} is a FIFO (named pipe); only regular files are read",
        "not a regular file | /dev/zero is a character device; only regular files are read",
    ]


def test_objects_are_read_with_one_bounded_request(s3_bucket):
    import s3fs

    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    fs.pipe_file(f"{bucket}/a.png", png())
    fs.pipe_file(f"{bucket}/empty.png", b"")
    assert read_bytes(f"s3://{bucket}/a.png", options) == png()
    assert read_bytes(f"s3://{bucket}/empty.png", options) == b""
    with pytest.raises(ImageError) as info:
        read_bytes(f"s3://{bucket}/a.png", options, max_bytes=20)
    assert info.value.reason == "file too large" and "more than 20 bytes" in info.value.detail
    with pytest.raises(ImageError) as info:
        read_bytes(f"s3://{bucket}/gone.png", options)
    assert info.value.reason == "file not found"


def test_guarded_turns_every_failure_into_an_image_error():
    def boom(exc):
        raise exc

    for exc, reason in [
        (KeyError("MPO"), "decode failed"),
        (ZeroDivisionError("x"), "decode failed"),
        (MemoryError(), "too large to decode"),
        (RecursionError(), "decode failed"),
        (ImageError("not an image", "x"), "not an image"),
    ]:
        for timeout in (None, 5.0):
            with pytest.raises(ImageError) as info:
                guarded(boom, exc, timeout_s=timeout)
            assert info.value.reason == reason
    assert guarded(lambda a, b=0: a + b, 1, b=2) == 3


def test_a_decoder_that_hangs_is_abandoned_after_the_time_limit(monkeypatch):
    def stuck(*args):
        time.sleep(30)

    monkeypatch.setattr(images, "_decode", stuck)
    monkeypatch.setattr(images, "_probe", stuck)
    for call in (lambda: decode(png(), timeout_s=0.3), lambda: probe(png(), timeout_s=0.3)):
        started = time.monotonic()
        with pytest.raises(ImageError) as info:
            call()
        assert info.value.reason == "decode timed out"
        assert time.monotonic() - started < 10  # the limit, not the decoder, decides when it ends


def test_only_the_formats_of_image_extensions_are_opened(tmp_path):
    img = Image.fromarray(np.full((16, 16, 3), 100, np.uint8))
    for fmt in ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"):
        buf = io.BytesIO()
        img.save(buf, fmt)
        assert decode(buf.getvalue()).size == (16, 16), fmt
    for fmt in ("EPS", "PCX", "SGI", "TGA", "PPM", "QOI"):  # EPS would be handed to Ghostscript
        buf = io.BytesIO()
        img.save(buf, fmt)
        with pytest.raises(ImageError) as info:
            decode(buf.getvalue())
        assert info.value.reason == "not an image", fmt


def test_map_pngs_are_decoded_inside_the_boundary():
    data = png((20, 30))
    assert decode_map_png(data)[0].shape == (20, 30)
    bad = bytearray(data)
    at = bad.index(b"IDAT")
    bad[at + 8 : at + 16] = b"\xff" * 8  # damaged compressed data (the CRC no longer matches)
    corrupt = {"truncated or corrupt image data", "not an image", "corrupt header"}
    for broken, reasons in [(bytes(bad), corrupt), (data[:40], corrupt), (b"", {"empty file"}),
                            (png((20, 30, 3)), {"not a class-index map"}), (b"GIF89a" + data, corrupt)]:
        with pytest.raises(ImageError) as info:
            decode_map_png(broken)
        assert info.value.reason in reasons
    with pytest.raises(ImageError) as info:
        decode_map_png(data, max_pixels=100)
    assert info.value.reason == "decompression bomb"


def test_guarded_works_in_a_forked_child_after_the_parent_used_it():
    """The guard's threads are reused; a forked child (a DataLoader worker) must not wait on
    its parent's threads, which do not exist in the child."""
    import multiprocessing

    assert guarded(lambda: 1, timeout_s=5) == 1  # the parent now has an idle guard thread
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply(_guarded_in_child) == 42


def _guarded_in_child() -> int:
    return guarded(lambda: 42, timeout_s=5)


def test_guarded_map_keeps_order_and_turns_each_failure_into_that_items_error():
    def square(x):
        if x == 3:
            raise ZeroDivisionError("three")
        if x == 5:
            raise ImageError("not an image", "five")
        return x * x

    for timeout in (None, 5.0):
        out = guarded_map(square, range(40), threads=3, timeout_s=timeout)
        assert [v for i, v in enumerate(out) if i not in (3, 5)] == [i * i for i in range(40) if i not in (3, 5)]
        assert (out[3].reason, out[5].reason) == ("decode failed", "not an image")
    assert guarded_map(square, [], threads=2) == []


def test_guarded_map_runs_on_at_most_its_threads():
    lock, running, most = threading.Lock(), [0], [0]

    def busy(x):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return x

    assert guarded_map(busy, range(30), threads=3, timeout_s=5) == list(range(30))
    assert most[0] == 3


def test_guarded_map_abandons_an_item_that_hangs_and_finishes_the_rest():
    release = threading.Event()

    def maybe_stuck(x):
        if x == 2:
            release.wait(30)
        return x

    started = time.monotonic()
    out = guarded_map(maybe_stuck, range(12), threads=2, timeout_s=0.5)
    took = time.monotonic() - started
    release.set()
    assert out[2].reason == "decode timed out"
    assert [v for i, v in enumerate(out) if i != 2] == [i for i in range(12) if i != 2]
    assert took < 10  # the limit, not the stuck item, decides when the batch ends
