"""`madmine sql` and sql/views.sql: views over every workspace table, local and on S3."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from madmine import duck, tables
from madmine.cli import app
from madmine.duck import Session
from madmine.errors import MadmineError
from madmine.steps.select import run_select
from madmine.workspace import Workspace
from selection_world import RUN_ID, build_world, invoke, selected

COMMITTED_ROWS = (70 + 30 + 30) * 4  # run-b, run-a, run-c (whose shards are committed); never the ghost shard


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = build_world(tmp_path_factory.mktemp("sqlworld"))
    errors = [dict(run_id=RUN_ID, uri="s3://corpus/bad.jpg", image_id=None, stage="decode", error="not an image", detail="x")]
    w.ws.write_parquet(tables.ERRORS.path(w.ws, run_id=RUN_ID, shard="00000"), pa.Table.from_pylist(errors, tables.ERRORS.schema))
    w.ws.write_parquet(tables.ERRORS.path(w.ws, run_id="ingest-1", shard="part-0"), pa.Table.from_pylist(errors, tables.ERRORS.schema))
    return w


def test_views_show_committed_rows_only(world):
    session = Session(world.ws)
    assert session.query("SELECT count(*) AS n FROM predictions").column("n").to_pylist() == [COMMITTED_ROWS]
    assert session.query("SELECT count(*) AS n FROM pairs WHERE image_id LIKE 'ghost%'").column("n").to_pylist() == [0]
    assert session.query("SELECT count(*) AS n FROM errors").column("n").to_pylist() == [2]
    assert session.query("SELECT count(*) AS n FROM manifest").column("n").to_pylist() == [71]
    assert {"manifest", "predictions", "pairs", "errors", "bounds", "ratings", "labels", "testsets"} <= set(session.tables)
    assert "models" not in session.tables and "selected" not in session.tables


def test_missing_table_names_the_command_that_creates_it(tmp_path):
    w = build_world(tmp_path, extras=False)
    session = Session(w.ws)
    with pytest.raises(MadmineError, match=r"table 'candidates' does not exist yet.*`madmine select --round R`"):
        session.query("SELECT * FROM candidates")
    with pytest.raises(MadmineError, match=r"table .ratings. does not exist yet.*madmine rate serve"):
        session.query("SELECT count(*) FROM ratings JOIN manifest USING (image_id)")
    with pytest.raises(MadmineError, match="no table named 'predictionz'"):
        session.query("SELECT * FROM predictionz")
    with pytest.raises(MadmineError, match="query failed.*syntax error"):
        session.query("SELEC 1")
    run_select(w.config, 0)  # the table appears: the same session sees it
    assert session.query("SELECT count(*) AS n FROM candidates").column("n").to_pylist()[0] > 0


def test_views_sql_runs_in_plain_duckdb(world):
    """The file works without madmine: set the variable, run the statements, query."""
    run_select(world.config, 0)
    con = duckdb.connect()
    con.execute("SET VARIABLE workspace = $w", {"w": world.ws.root})
    for statement in duckdb.extract_statements((duck.sql_dir() / "views.sql").read_text()):
        try:
            con.execute(statement.query)
        except duckdb.IOException as exc:  # tables this world does not have
            assert re.search(r"tables/(models|selected|finetune_curves|evaluation\w*|selection_quality|competition\w*|sample|selectors|repair)/", str(exc))
    plain = con.sql("SELECT competitor, count(*) AS n FROM pairs GROUP BY ALL ORDER BY ALL").fetchall()
    ours = Session(world.ws).query("SELECT competitor, count(*) AS n FROM pairs GROUP BY ALL ORDER BY ALL")
    assert plain == [tuple(r.values()) for r in ours.to_pylist()]
    assert con.execute("SELECT count(*) FROM candidates").fetchone()[0] > 0


def test_cli_sql_formats(world, tmp_path):
    path = str(world.config_path)
    query = "SELECT competitor, round(avg(d), 4) AS mean_d FROM pairs WHERE run_id = 'run-b' GROUP BY ALL ORDER BY 1"
    result, text = invoke(["--config", path, "sql", query, "--format", "csv"])
    assert result.exit_code == 0, text
    assert text.splitlines()[0] == '"competitor","mean_d"' and len(text.splitlines()) == 4
    result, text = invoke(["--config", path, "sql", query, "--format", "json", "--out", str(tmp_path / "q.json")])
    assert result.exit_code == 0, text
    assert [r["competitor"] for r in json.loads((tmp_path / "q.json").read_text())] == ["fcn", "lraspp", "psp"]
    result, text = invoke(["--config", path, "sql", query, "--format", "parquet", "--out", str(tmp_path / "q.parquet")])
    assert result.exit_code == 0, text
    assert pq.read_table(tmp_path / "q.parquet").num_rows == 3
    result, text = invoke(["--config", path, "sql", query])
    assert result.exit_code == 0 and "mean_d" in text and "3 rows" in text
    result, text = invoke(["--config", path, "sql", query, "--format", "parquet"])
    assert result.exit_code != 0 and "--out FILE.parquet" in text
    result, text = invoke(["--config", path, "sql", "SELECT * FROM models"])
    assert result.exit_code != 0 and "table 'models' does not exist yet" in " ".join(text.split())


def test_cli_sql_shell_reads_statements_from_stdin(world):
    from typer.testing import CliRunner

    lines = "SELECT 40 + 2\n  AS answer;\n.tables\nSELECT * FROM modelz;\nSELECT 'still here' AS s;\n.quit\nSELECT 1;\n"
    result = CliRunner().invoke(app, ["--config", str(world.config_path), "sql"], input=lines, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stdout
    out = result.stdout
    assert "42" in out and "predictions" in out and "no table named 'modelz'" in out and "still here" in out
    assert out.count("1 rows") == 2  # the statement after .quit never runs


# ---- S3 (moto's real HTTP endpoint) ------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": endpoint}).mkdir("madmine-test")
    yield endpoint
    server.stop()


def test_select_and_views_on_s3(tmp_path, s3_endpoint):
    storage = f'[storage]\nendpoint_url = "{s3_endpoint}"\nkey = "testing"\nsecret = "testing"\n'
    remote = build_world(tmp_path / "s3", seed=4, workspace="s3://madmine-test/ws", storage=storage)
    local = build_world(tmp_path / "local", seed=4)
    assert not remote.ws.is_local

    out = tmp_path / "m.parquet"
    result = run_select(remote.config, 1, out=str(out))
    assert result.path == "s3://madmine-test/ws/tables/candidates/round-1-mad.parquet"
    assert selected(result.table) == remote.reference(1, remote.config.selection.n3)
    local_result = run_select(local.config, 1)
    assert remote.ws.get_bytes(tables.CANDIDATES.path(remote.ws, round=1, strategy="mad")) == out.read_bytes()
    assert out.read_bytes() == Path(local_result.path).read_bytes()

    session = Session(Workspace.from_config(remote.config))
    assert session.query("SELECT count(*) AS n FROM predictions").column("n").to_pylist() == [COMMITTED_ROWS]
    top = session.query("SELECT image_id, rank FROM candidates WHERE rank = 1 ORDER BY ALL")
    assert top.num_rows == len([r for r in selected(result.table) if r["rank"] == 1])
    with pytest.raises(MadmineError, match="table 'models' does not exist yet in workspace s3://madmine-test/ws"):
        session.query("FROM models")

    query = "SELECT count(*) AS n FROM candidates"
    res, text = invoke(["--config", str(remote.config_path), "sql", query, "--format", "json"])
    assert res.exit_code == 0, text
    assert json.loads(res.stdout) == [{"n": result.num_rows}], text
