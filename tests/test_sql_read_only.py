"""`madmine sql` writes nothing to the workspace, as documented: statements other than queries
are refused before they run, and --out never names a folder or a file inside the workspace.

Read-only holds twice: the statement filter refuses a corpus of writing statements (the
EXPLAIN ANALYZE forms, which run what they explain, included), and the connection itself
refuses the same writes, and any read outside the workspace, when handed them directly.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import threading

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import bounded
import rating_world
from madmine.cli import app
from madmine.duck import Session
from madmine.errors import MadmineError
from madmine.readonly_fs import ReadOnlyWorkspaceFS
from madmine.workspace import Workspace


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return rating_world.build(tmp_path_factory.mktemp("sql") / "w")


def invoke(world, *args: str):
    result = CliRunner().invoke(app, ["--config", str(world.config_path), "sql", *args], env={"COLUMNS": "200"})
    return result, result.stdout + (result.stderr or "")


def one_line_error(result, text: str) -> str:
    assert result.exit_code == 2, text
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def digest(world) -> str:
    files = sorted(p for p in (world.root / "work").rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.as_posix().encode() + p.read_bytes() for p in files)).hexdigest()


def test_queries_run(world):
    for query in ("SELECT count(*) AS n FROM manifest", "WITH m AS (FROM manifest) SELECT count(*) AS n FROM m",
                  "FROM manifest SELECT count(*) AS n", "DESCRIBE manifest", "SUMMARIZE manifest",
                  "EXPLAIN SELECT 1", "SELECT 1 AS a; SELECT 2 AS b"):
        result, text = invoke(world, query, "--format", "csv")
        assert result.exit_code == 0, text


@pytest.mark.parametrize(
    "statement",
    [
        "COPY (SELECT * FROM manifest LIMIT 1) TO '{manifest}' (FORMAT parquet)",
        "COPY (SELECT 1 AS x) TO '{work}/notes.csv'",
        "EXPORT DATABASE '{work}/export'",
        "ATTACH '{work}/evil.duckdb' AS evil",
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO manifest SELECT * FROM manifest",
        "SET profiling_output = '{work}/profile.json'",
        "PRAGMA enable_profiling = 'json'",
        "INSTALL httpfs",
        "SELECT 1; COPY (SELECT 1) TO '{work}/x.csv'",
        # EXPLAIN ANALYZE runs the statement it explains
        "EXPLAIN ANALYZE COPY (SELECT 42 AS a) TO '{work}/tables/manifest/evil.parquet' (FORMAT parquet)",
        "EXPLAIN (ANALYZE) COPY (SELECT 42 AS a) TO '{work}/tables/manifest/evil.parquet' (FORMAT parquet)",
        "EXPLAIN (FORMAT json, ANALYZE) COPY (SELECT 42 AS a) TO '{work}/evil.json'",
        "explain /* a comment */ analyse copy (select 42 as a) to '{work}/evil.csv'",
        "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
        "EXPLAIN ANALYZE SET memory_limit = '100GB'",
        "EXPLAIN ANALYZE INSERT INTO manifest SELECT * FROM manifest",
        "EXPLAIN COPY (SELECT 1) TO '{work}/x.csv'",
        "SELECT 1; EXPLAIN ANALYZE COPY (SELECT 1) TO '{work}/x.csv'",
        "SET memory_limit = '100GB'",
        "SET enable_external_access = true",
        "SET VARIABLE workspace = '/'",
        "RESET lock_configuration",
        "CALL pragma_version()",
        "LOAD httpfs",
        "DETACH memory",
        "CREATE OR REPLACE VIEW manifest AS SELECT 1 AS fake",
        "DROP VIEW manifest",
        "CHECKPOINT",
    ],
)
def test_statements_that_write_are_refused_and_write_nothing(world, statement):
    manifest = next((world.root / "work" / "tables" / "manifest").glob("*.parquet"))
    before = digest(world)
    text_of = statement.format(manifest=manifest, work=world.root / "work")
    line = one_line_error(*invoke(world, text_of))
    assert "madmine sql is read-only" in line
    assert digest(world) == before


def test_out_must_be_a_new_or_plain_file_outside_the_workspace(world, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    cases = [
        (f"{folder}/", "is a folder"),
        (str(folder), "is a folder"),
        (f"{tmp_path}/missing/out.csv", "does not exist"),
        (str(world.root / "work" / "tables" / "manifest" / "part-0.parquet"), "inside the workspace"),
        (str(world.root / "work" / "out.csv"), "inside the workspace"),
    ]
    before = digest(world)
    for out, expected in cases:
        line = one_line_error(*invoke(world, "SELECT 1 AS a", "--out", out, "--format", "parquet"))
        assert expected in line
    assert digest(world) == before
    result, text = invoke(world, "SELECT 1 AS a", "--out", str(folder / "a.csv"), "--format", "csv")
    assert result.exit_code == 0 and (folder / "a.csv").read_text().splitlines()[1] == "1", text


def shell(world, lines: str):
    result = CliRunner().invoke(app, ["--config", str(world.config_path), "sql"], input=lines, env={"COLUMNS": "400"})
    return result, result.stdout + (result.stderr or "")


def test_the_shell_refuses_the_same_statements(world):
    manifest = next((world.root / "work" / "tables" / "manifest").glob("*.parquet"))
    corpus = [
        f"EXPLAIN ANALYZE COPY (SELECT 42 AS a) TO '{manifest.parent}/evil.parquet' (FORMAT parquet);",
        f"EXPLAIN (ANALYZE) COPY (SELECT * FROM manifest) TO '{manifest}' (FORMAT parquet);",
        "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1;",
        "EXPLAIN ANALYZE SET memory_limit = '100GB';",
        f"COPY (SELECT 1) TO '{world.root}/work/x.csv';",
    ]
    before = digest(world)
    result, text = shell(world, "\n".join([*corpus, "SELECT count(*) AS rows_left FROM manifest;", ""]))
    assert result.exit_code == 0, text
    assert text.count("madmine sql is read-only") == len(corpus), text
    assert "rows_left" in text and f"{len(world.image_ids)}" in text  # the manifest is whole, the shell alive
    assert digest(world) == before


# ---- the connection itself -------------------------------------------------------------------------


@pytest.fixture
def session(world):
    s = Session(world.ws, memory_limit="256MB")
    yield s
    s.close()


def test_the_connection_refuses_writes_the_filter_never_sees(world, session, tmp_path):
    """Handed straight to the connection, past the statement filter, every write fails and
    nothing appears anywhere: the workspace is reachable only read-only, nothing else at all."""
    session.refresh()
    work = world.root / "work"
    manifest = next((work / "tables" / "manifest").glob("*.parquet"))
    ro = f"madmine://{work}"
    writes = [
        f"COPY (SELECT 42 AS a) TO '{ro}/tables/manifest/evil.parquet' (FORMAT parquet)",
        f"COPY (SELECT * FROM manifest) TO '{ro}/tables/manifest/{manifest.name}' (FORMAT parquet)",
        f"EXPLAIN ANALYZE COPY (SELECT 42 AS a) TO '{work}/tables/manifest/evil.parquet' (FORMAT parquet)",
        f"COPY (SELECT 42 AS a) TO '{tmp_path}/outside.csv'",
        f"COPY (SELECT 42 AS a) TO '{ro}/evil' (FORMAT parquet, PARTITION_BY (a))",
        f"ATTACH '{ro}/evil.duckdb' AS evil",
        f"ATTACH '{tmp_path}/evil.duckdb' AS evil",
        f"EXPORT DATABASE '{ro}/export'",
        f"EXPORT DATABASE '{tmp_path}/export'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET memory_limit = '100GB'",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        f"SET allowed_directories = ['{tmp_path}']",
        f"SET temp_directory = '{work}'",
        f"SET profiling_output = '{work}/profile.json'",
        "PRAGMA enable_profiling = 'json'",
    ]
    before, settings = digest(world), session.con.execute("FROM duckdb_settings() SELECT name, value").fetchall()
    for statement in writes:
        with pytest.raises(duckdb.Error):
            session.con.execute(statement)
    assert digest(world) == before
    assert list(tmp_path.iterdir()) == []
    assert session.con.execute("FROM duckdb_settings() SELECT name, value").fetchall() == settings
    assert session.query("SELECT count(*) AS n FROM manifest").column("n").to_pylist() == [len(world.image_ids)]


def test_the_connection_reads_nothing_outside_the_workspace(world, session, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    work = world.root / "work"
    reads = {
        f"SELECT content FROM read_text('{outside}')": "disabled by configuration",
        f"SELECT content FROM read_text('madmine://{outside}')": "disabled by configuration",
        f"SELECT content FROM read_text('madmine://{work}/../../{outside.relative_to('/')}')": "outside the workspace",
        f"SELECT * FROM glob('madmine://{work}/../*')": "outside the workspace",
        f"SELECT * FROM read_csv('{outside}')": "disabled by configuration",
        "SELECT * FROM read_text('s3://bucket/key')": "disabled by configuration",
    }
    (work / "leak.txt").symlink_to(outside)
    try:
        reads[f"SELECT content FROM read_text('madmine://{work}/leak.txt')"] = "leads outside the workspace"
        for query, expected in reads.items():
            with pytest.raises(MadmineError, match=expected) as info:
                session.query(query)
            assert "secret" not in str(info.value).replace("secret.txt", "") and "Traceback" not in str(info.value)
    finally:
        (work / "leak.txt").unlink()


def test_the_spill_folder_is_private_and_removed(world):
    before = set(os.listdir(tempfile.gettempdir()))
    session = Session(world.ws)
    mine = [n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("madmine-sql-")]
    assert len(mine) == 1
    temp = os.path.join(tempfile.gettempdir(), mine[0])
    assert session.con.execute("SELECT current_setting('temp_directory')").fetchone()[0] == temp
    session.close()
    assert not os.path.exists(temp)


def test_memory_is_limited_with_a_clear_error(world):
    line = one_line_error(*invoke(world, "SELECT list(range) AS l FROM range(50000000)", "--memory-limit", "32MB"))
    assert "needs more memory than madmine sql allows (--memory-limit 32MB)" in line


def test_hostile_files_neither_hang_nor_fill_memory(world, tmp_path):
    """/dev/zero, a FIFO and a symlink to /dev/zero inside the workspace, in a child with a time
    and memory limit: each query ends at once with its own error, and the session goes on."""
    work = world.root / "work"
    fifo, zero = work / "notes.txt", work / "zero.txt"
    os.mkfifo(fifo)
    zero.symlink_to("/dev/zero")
    try:
        result = bounded.python(
            f"""
            from madmine.duck import Session
            from madmine.errors import MadmineError
            from madmine.workspace import Workspace
            session = Session(Workspace({str(work)!r}))
            for path in ("/dev/zero", "madmine:///dev/zero", "madmine://{zero}", "madmine://{fifo}"):
                try:
                    session.query(f"SELECT length(content) FROM read_text('{{path}}')")
                    print("READ", path)
                except MadmineError as exc:
                    print("refused |", exc)
            print(session.query("SELECT count(*) AS n FROM manifest").column("n").to_pylist())
            """,
            timeout=60,
            memory=3 << 30,
        )
    finally:
        fifo.unlink()
        zero.unlink()
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and all(line.startswith("refused |") for line in lines[:4]), result.stdout
    assert "disabled by configuration" in lines[0] and "disabled by configuration" in lines[1]
    assert "leads outside the workspace (to /dev/zero)" in lines[2]
    assert f"{fifo} is a FIFO (named pipe)" in lines[3]
    assert lines[4] == f"[{len(world.image_ids)}]"


def test_the_cli_refuses_dev_zero_at_once(world):
    result = bounded.madmine("--config", str(world.config_path), "sql",
                             "SELECT length(content) FROM read_text('/dev/zero')", timeout=90)
    assert "disabled by configuration" in bounded.one_line_error(result)


def test_an_unreadable_table_is_named_and_the_others_still_answer(world):
    fifo = world.root / "work" / "tables" / "manifest" / "zz.parquet"
    os.mkfifo(fifo)
    try:
        session = Session(world.ws)
        with pytest.raises(MadmineError, match=r"table 'manifest' cannot be read: .*zz.parquet is a FIFO"):
            session.query("SELECT count(*) FROM manifest")
        assert session.query("SELECT count(*) AS n FROM candidates").column("n").to_pylist()[0] > 0
        session.close()
    finally:
        fifo.unlink()


def test_a_file_read_by_many_threads_at_once_gives_each_its_own_bytes(tmp_path):
    """DuckDB reads one file from several threads, each as seek() then read(): every thread must
    get the bytes at its own offset (a shared position made Parquet reads fail, "Out of buffer")."""
    data = random.Random(0).randbytes(1 << 20)
    (tmp_path / "blob.bin").write_bytes(data)
    handle = ReadOnlyWorkspaceFS(Workspace(str(tmp_path))).open(f"madmine://{tmp_path}/blob.bin", "rb")
    wrong = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(300):
            start, length = rng.randrange(len(data)), rng.randrange(1, 40_000)
            handle.seek(start)
            if handle.read(length) != data[start : start + length]:
                wrong.append((start, length))

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handle.close()
    assert wrong == [] and handle.size == len(data)


def test_parallel_scans_of_large_shards_match_an_independent_read(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "work" / "tables" / "manifest"
    folder.mkdir(parents=True)
    for part in range(3):
        n = 300_000
        table = pa.table({"image_id": [f"{part}-{k:07d}" for k in range(n)], "bytes": rng.integers(0, 10**6, n),
                          "width": rng.integers(1, 5000, n).astype(np.int32)})
        pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=8_192)
    expected = pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("*.parquet"))])
    want = (expected.num_rows, int(pc.sum(expected["bytes"]).as_py()), int(pc.max(expected["width"]).as_py()))
    session = Session(Workspace(str(tmp_path / "work")))
    try:
        for _ in range(6):
            got = session.query("SELECT count(*) AS n, sum(bytes) AS b, max(width) AS w FROM manifest").to_pylist()[0]
            assert (got["n"], got["b"], got["w"]) == want
    finally:
        session.close()
