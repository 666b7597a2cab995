"""`madmine sql` writes nothing to the workspace, as documented: statements other than queries
are refused before they run, and --out never names a folder or a file inside the workspace."""

from __future__ import annotations

import hashlib

import pytest
from typer.testing import CliRunner

import rating_world
from madmine.cli import app


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
