"""Ingest in shards: copies of the same bytes in different shards collapse to one row, an s3://
prefix is listed a page at a time, the todo file holds one row group per shard, shards in
several processes give what one process gives, and a killed shard process stops the ingest
with nothing half-promoted."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal

import pyarrow.parquet as pq
import pytest
import s3fs

from counting_s3 import CountingS3Server
from madmine import tables
from madmine.errors import MadmineError
from madmine.objectstore import StoreUnavailable
from madmine.steps import ingest as ingest_module
from madmine.steps.ingest import ingest
from madmine.steps.ingest_shards import executors, listing
from madmine.steps.ingest_shards.area import IngestArea
from madmine.steps.ingest_shards.plan import plan
from madmine.steps.ingest_shards.worker import IngestContext
from madmine.steps.score.shards import ShardSpec
from madmine.workspace import Workspace
from network import free_port
from worlds import write_corpus


def test_copies_in_different_shards_and_of_known_images_collapse_to_the_smallest_uri(tmp_path):
    ws = Workspace(str(tmp_path / "ws"))
    first = write_corpus(tmp_path / "a", 3, seed=1)
    assert ingest(ws, [str(tmp_path / "a")], shard_size=2, show_progress=False).added == 3
    corpus = write_corpus(tmp_path / "b", 6, seed=2)
    shutil.copy(corpus[0], tmp_path / "b" / "zz-late-copy.png")  # another shard than the original (shards of 2)
    shutil.copy(corpus[0], tmp_path / "b" / "aa-early-copy.png")  # sorts first: this URI stays
    shutil.copy(first[1], tmp_path / "b" / "known-image.png")  # the manifest holds these bytes already
    result = ingest(ws, [str(tmp_path / "b")], shard_size=2, show_progress=False)
    assert result.tried == 9 and result.shards == 5
    assert result.added == 6 and result.duplicates == 3 and result.error_count == 0
    manifest = tables.MANIFEST.read(ws)
    ids = manifest.column("image_id").to_pylist()
    assert len(ids) == len(set(ids)) == 9
    uris = set(manifest.column("uri").to_pylist())
    assert str(tmp_path / "b" / "aa-early-copy.png") in uris and str(corpus[0]) not in uris
    assert not any("copy" in u and "early" not in u for u in uris) and str(tmp_path / "b" / "known-image.png") not in uris
    for path in tables.MANIFEST.files(ws):  # every part sorted, in row groups a scoring worker can read alone
        part = pq.ParquetFile(path)
        assert part.schema_arrow.metadata[tables.SORTED_BY] == b"image_id"
        column = part.read(columns=["image_id"]).column("image_id").to_pylist()
        assert column == sorted(column)
    assert not ws.listdir(ws.path("ingest"))  # the working area is gone


def test_an_s3_prefix_is_listed_a_page_at_a_time(tmp_path):
    server = CountingS3Server()
    server.start()
    try:
        fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": server.endpoint})
        fs.mkdir("pages")
        fs.pipe({f"pages/corpus/{k:05d}.jpg": b"x" for k in range(1050)} | {"pages/corpus/notes.md": b"y"})
        walk = listing._walk_s3(fs, "pages/corpus")
        before = server.snapshot()["GET"]
        first = next(walk)
        after_first = server.snapshot()["GET"] - before
        rest = list(walk)
        assert after_first == 1 and server.snapshot()["GET"] - before == 2  # 1,000 keys a page: two pages
        assert first == "pages/corpus/00000.jpg" and len(rest) == 1050

        listed = listing.write_listing(["s3://pages/corpus/"], {"key": "testing", "secret": "testing",
                                        "client_kwargs": {"endpoint_url": server.endpoint}}, str(tmp_path / "l.parquet"))
        assert listed.uris == 1050 and listed.skipped == 1 and not listed.errors
        uris = pq.read_table(tmp_path / "l.parquet").column("uri").to_pylist()
        assert uris[0] == "s3://pages/corpus/00000.jpg" and len(set(uris)) == 1050
    finally:
        server.stop()


def test_an_s3_glob_is_listed_a_page_at_a_time_and_names_what_fsspec_glob_names(tmp_path):
    server = CountingS3Server()
    server.start()
    try:
        options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": server.endpoint}}
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir("globs")
        fs.pipe({f"globs/corpus/{k:05d}.jpg": b"x" for k in range(1050)}
                | {f"globs/corpus/sub/{k}.jpg": b"x" for k in range(5)}
                | {"globs/corpus/sub/deeper/a.png": b"x", "globs/corpus/notes.md": b"y", "globs/other/b.jpg": b"x"})
        before = server.snapshot()["GET"]
        streamed = listing._glob(fs, "s3", "globs/corpus/*.jpg")
        assert next(streamed) == "globs/corpus/00000.jpg" and server.snapshot()["GET"] - before == 1  # one page read
        assert len(list(streamed)) == 1049 and server.snapshot()["GET"] - before == 2  # 1,000 keys a page
        for pattern in ("globs/corpus/*.jpg", "globs/corpus/**/*.jpg", "globs/corpus/sub/*", "globs/c*/0000?.jpg",
                        "globs/corpus/**", "globs/*/b.jpg"):
            fs.invalidate_cache()
            expected = sorted(p for p in fs.glob(pattern) if fs.isfile(p))
            fs.invalidate_cache()
            assert sorted(listing._glob(fs, "s3", pattern)) == expected, pattern
        listed = listing.write_listing(["s3://globs/corpus/*.jpg"], options, str(tmp_path / "l.parquet"))
        assert listed.uris == 1050 and not listed.errors
    finally:
        server.stop()


def test_new_uris_are_cut_into_one_row_group_per_shard(tmp_path):
    ws = Workspace(str(tmp_path / "ws"))
    corpus = write_corpus(tmp_path / "c", 7)
    (tmp_path / "list.txt").write_text("\n".join(str(p) for p in corpus + corpus[:2]) + "\n")  # named twice
    listed = listing.write_listing([str(tmp_path / "list.txt")], {}, str(tmp_path / "l.parquet"))
    assert listed.uris == 9
    area = IngestArea(ws, "test")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    todo = plan(area, str(tmp_path / "l.parquet"), listed.uris, retry_errors=False, shard_size=3, scratch=str(scratch))
    assert (todo.new, todo.known, todo.failed_before) == (7, 0, 0)
    assert [(s.shard, s.start, s.stop) for s in todo.shards] == [("00000", 0, 3), ("00001", 3, 6), ("00002", 6, 7)]
    meta = pq.ParquetFile(area.todo).metadata
    assert [meta.row_group(k).num_rows for k in range(meta.num_row_groups)] == [3, 3, 1]
    assert pq.read_table(area.todo).column("uri").to_pylist() == sorted(str(p) for p in corpus)


def _manifest_rows(ws: Workspace) -> list[tuple]:
    table = tables.MANIFEST.read(ws).drop_columns(["ingested_at"]).sort_by("image_id")
    return list(zip(*(table.column(name).to_pylist() for name in table.column_names)))


def test_shards_in_several_processes_give_what_one_process_gives(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus", 10, seed=3)
    shutil.copy(corpus[0], tmp_path / "corpus" / "zz-copy.png")  # a duplicate in another shard
    (tmp_path / "corpus" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    pids = []

    def watched(specs, ctx, processes=1):
        for summary in executors.run_local(specs, ctx, processes):
            pids.append(summary["pid"])
            yield summary

    monkeypatch.setattr(ingest_module, "run_local", watched)
    results = {}
    for processes in (1, 2):
        ws = Workspace(str(tmp_path / f"ws{processes}"))
        results[processes] = (ingest(ws, [str(tmp_path / "corpus")], shard_size=3, processes=processes,
                                     executor="local", show_progress=False), _manifest_rows(ws))
    one, two = results[1], results[2]
    assert len(pids) == 2 * 4
    assert set(pids[:4]) == {os.getpid()}  # one process: this one
    assert os.getpid() not in pids[4:] and 1 <= len(set(pids[4:])) <= 2  # two: others (one may take all four)
    assert one[1] == two[1] and len(one[1]) == 10
    for result in (one[0], two[0]):
        assert (result.added, result.duplicates, result.error_count, result.shards) == (10, 1, 1, 4)


def test_a_killed_shard_process_stops_the_ingest_in_one_line_and_a_rerun_reads_everything(tmp_path, monkeypatch):
    write_corpus(tmp_path / "corpus", 40, seed=4)
    ws = Workspace(str(tmp_path / "ws"))
    before = {child.pid for child in multiprocessing.active_children()}
    killed = []

    def killing(specs, ctx, processes=1):
        for summary in executors.run_local(specs, ctx, processes):
            if not killed:  # the pool is running: kill its processes, SIGKILL as the OOM killer would
                for child in multiprocessing.active_children():
                    if child.pid not in before:
                        os.kill(child.pid, signal.SIGKILL)
                        killed.append(child.pid)
            yield summary

    monkeypatch.setattr(ingest_module, "run_local", killing)
    with pytest.raises(MadmineError, match=r"a shard process died .* re-run the same `madmine ingest`"):
        ingest(ws, [str(tmp_path / "corpus")], shard_size=1, processes=2, executor="local", show_progress=False)
    assert killed
    assert tables.MANIFEST.read(ws) is None  # nothing of an incomplete ingest entered the manifest
    monkeypatch.undo()
    again = ingest(ws, [str(tmp_path / "corpus")], shard_size=1, processes=2, executor="local", show_progress=False)
    assert again.added == 40 and again.error_count == 0
    ids = tables.MANIFEST.read(ws).column("image_id").to_pylist()
    assert len(ids) == len(set(ids)) == 40
    assert {child.pid for child in multiprocessing.active_children()} <= before  # the pools are gone


def test_a_store_that_fails_in_a_shard_process_is_one_line_in_the_driver(tmp_path):
    """A shard process's own workspace reads fail against a store nobody answers: the driver gets
    the one-line StoreUnavailable, not the library's error stripped of its cause on the way back."""
    options = {"key": "testing", "secret": "testing",
               "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{free_port()}"},  # nothing listens
               "config_kwargs": {"retries": {"total_max_attempts": 2, "mode": "standard"}, "connect_timeout": 1}}
    ctx = IngestContext("down", "s3://down/ws", options, {}, "2026-12-07T00:00:00+00:00", 64_000_000, 8, 1 << 20, 5.0, 1)
    specs = [ShardSpec(f"{k:05d}", "down/ws/ingest/down/todo.parquet", k, k + 1) for k in range(2)]
    with pytest.raises(StoreUnavailable, match=r"^the object store kept failing: EndpointConnectionError.* re-run"):
        list(executors.run_local(specs, ctx, processes=2))
