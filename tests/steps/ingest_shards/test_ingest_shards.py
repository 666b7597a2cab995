"""Ingest in shards: copies of the same bytes in different shards collapse to one row, an s3://
prefix is listed a page at a time, and the todo file holds one row group per shard."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import s3fs

from counting_s3 import CountingS3Server
from madmine import tables
from madmine.steps.ingest import ingest
from madmine.steps.ingest_shards import listing
from madmine.steps.ingest_shards.area import IngestArea
from madmine.steps.ingest_shards.plan import plan
from madmine.workspace import Workspace
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
