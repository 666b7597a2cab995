"""The table catalog: every path of a table comes from it, sql/views.sql agrees with it, and
run tables show only committed shards."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest

from madmine import duck, tables
from madmine.completion import shard_markers
from madmine.workspace import Workspace


def test_every_catalog_table_has_a_view_reading_its_folder():
    views = {}
    for statement in duck.statements("views"):
        match = re.search(r"CREATE OR REPLACE VIEW (\w+) AS", statement)
        if match:
            views[match.group(1)] = statement
    assert set(tables.CATALOG) <= set(views), set(tables.CATALOG) - set(views)
    for name, table in tables.CATALOG.items():
        if table.run_table:
            assert f"committed_run_table('{name}')" in views[name]
        else:
            assert f"/{table.folder}/[!.]*.parquet" in views[name]


@pytest.mark.parametrize("table", list(tables.CATALOG.values()), ids=lambda t: t.name)
def test_paths_round_trip_through_their_keys(tmp_path, table):
    ws = Workspace(str(tmp_path))
    keys = {k: f"{k}-7" if k != "round" else "12" for k in table.keys}
    path = table.path(ws, **keys)
    assert path.startswith(ws.path(table.folder) + "/") and path.endswith(".parquet")
    assert table.keys_of(path) == keys
    if table.keys:
        with pytest.raises(TypeError, match="needs"):
            table.path(ws)


def test_rounds_and_key_globs(tmp_path):
    ws = Workspace(str(tmp_path))
    for r, strategy in ((0, "mad"), (3, "mad"), (10, "mad"), (2, "entropy")):
        tables.CANDIDATES.write(ws, tables.CANDIDATES.empty(), round=r, strategy=strategy)
    ws.put_bytes(ws.path(tables.CANDIDATES.folder, "notes.parquet"), b"not a round")
    assert tables.CANDIDATES.rounds(ws, strategy="mad") == [0, 3, 10]
    assert tables.CANDIDATES.rounds(ws) == [0, 2, 3, 10]
    assert len(tables.CANDIDATES.files(ws)) == 5  # every part of the folder, named by the pattern or not


def test_run_tables_show_committed_shards_only(tmp_path):
    ws = Workspace(str(tmp_path))
    row = {"run_id": "r", "uri": "u", "image_id": "i", "stage": "decode", "error": "x", "detail": ""}
    for shard in ("a", "b"):
        tables.ERRORS.write(ws, pa.Table.from_pylist([{**row, "image_id": shard}]), run_id="r", shard=shard)
    tables.ERRORS.write(ws, pa.Table.from_pylist([{**row, "run_id": "ingest"}]), run_id="ingest", shard="part-1")
    assert tables.ERRORS.read(ws, run_id="r") is None  # written, not committed
    shard_markers(ws, "r").mark_done("b", {"images": 1})
    assert tables.ERRORS.read(ws, run_id="r").column("image_id").to_pylist() == ["b"]
    assert sorted(tables.ERRORS.read(ws).column("run_id").to_pylist()) == ["ingest", "r"]  # ingest errors have no shards
    assert len(tables.ERRORS.files(ws, committed_only=False)) == 3


def test_write_keeps_the_contract_schema(tmp_path):
    ws = Workspace(str(tmp_path))
    loose = pa.table({"round": [1], "image_id": ["x"], "uri": ["u"], "mos": [2], "n_ratings": [3], "rank": [1], "extra": [0]})
    path = tables.SELECTED.write(ws, loose, round=1, strategy="mad")
    written = ws.read_parquet([path])
    assert written.schema == tables.SELECTED.schema


def test_strategy_keys_name_every_strategys_files(tmp_path):
    """S, model versions and curves are keyed by strategy: each file carries its strategy's name, a
    key left out is refused, and no strategy's file is read as another's."""
    ws = Workspace(str(tmp_path))
    assert tables.SELECTED.path(ws, round=2, strategy="mad").endswith("tables/selected/round-2-mad.parquet")
    with pytest.raises(TypeError, match="strategy"):
        tables.SELECTED.path(ws, round=2)
    assert tables.SELECTED.path(ws, round=2, strategy="entropy").endswith("tables/selected/round-2-entropy.parquet")
    assert tables.MODELS.path(ws, model="target", round=0, selection="mad").endswith("tables/models/target-round-0-mad.parquet")
    assert tables.MODELS.path(ws, model="target", round=0, selection="random").endswith("target-round-0-random.parquet")
    assert tables.FINETUNE_CURVES.path(ws, round=1, selection="msp").endswith("finetune_curves/round-1-msp.parquet")
    row = {"round": 0, "image_id": "a", "uri": "u", "mos": 1.0, "n_ratings": 3, "rank": 1}
    for r, strategy in ((0, "mad"), (0, "entropy"), (3, "mad"), (30, "random")):
        tables.SELECTED.write(ws, pa.Table.from_pylist([{**row, "round": r, "image_id": f"{r}-{strategy}"}]),
                              round=r, strategy=strategy)
    assert tables.SELECTED.keys_of(tables.SELECTED.path(ws, round=3, strategy="mad")) == {"round": "3", "strategy": "mad"}
    assert tables.SELECTED.rounds(ws, strategy="mad") == [0, 3]
    assert tables.SELECTED.rounds(ws, strategy="entropy") == [0]
    assert tables.SELECTED.rounds(ws) == [0, 3, 30]
    assert tables.SELECTED.read(ws, round=3).column("image_id").to_pylist() == ["3-mad"]  # not round 30's
    assert sorted(tables.SELECTED.read(ws, round=0).column("image_id").to_pylist()) == ["0-entropy", "0-mad"]
    assert tables.SELECTED.read(ws, round=0, strategy="mad").column("image_id").to_pylist() == ["0-mad"]
    assert not tables.SELECTED.exists(ws, round=3, strategy="entropy")
