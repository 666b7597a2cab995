"""DuckDB over the workspace: one connection, the workspace filesystem, views of its tables.

DuckDB cannot download its httpfs extension here, so s3:// is read through the same fsspec
filesystem the workspace uses, registered on the connection. Every statement comes from
sql/*.sql; values reach SQL only as bound parameters (`SET VARIABLE name = $value`) that
the files read with getvariable(), which also keeps the files runnable in the duckdb CLI.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

import duckdb
import pyarrow as pa

from madmine import tables
from madmine.errors import MadmineError
from madmine.workspace import Workspace

# Every table a workspace may hold, and the command that writes it (for "missing table").
CREATED_BY = {name: table.written_by for name, table in tables.CATALOG.items()}

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_VIEW_NAME = re.compile(r"CREATE\s+OR\s+REPLACE\s+VIEW\s+(\w+)", re.IGNORECASE)
_MISSING_TABLE = re.compile(r"Table with name (\w+) does not exist", re.IGNORECASE)


def sql_dir() -> Path:
    """The sql/ folder of the project (MADMINE_SQL_DIR overrides, for installed copies)."""
    override = os.environ.get("MADMINE_SQL_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "sql"


@cache
def sql_text(name: str) -> str:
    path = sql_dir() / f"{name}.sql"
    if not path.exists():
        raise MadmineError(f"SQL file {path} is missing: madmine needs its sql/ folder (set MADMINE_SQL_DIR)")
    return path.read_text()


def statements(name: str) -> list[str]:
    """The statements of sql/<name>.sql, split by DuckDB's own parser."""
    return [s.query for s in duckdb.extract_statements(sql_text(name))]


def set_variables(con: duckdb.DuckDBPyConnection, **values) -> None:
    """Bind values as DuckDB variables; names are fixed identifiers, values are parameters."""
    for name, value in values.items():
        if not _IDENTIFIER.match(name):
            raise ValueError(f"not a variable name: {name!r}")
        con.execute(f"SET VARIABLE {name} = $value", {"value": value})


def run_file(con: duckdb.DuckDBPyConnection, name: str):
    """Execute every statement of sql/<name>.sql; a query's relation when the last is one."""
    *setup, last = statements(name)
    for statement in setup:
        con.execute(statement)
    return con.sql(last)


def connect(
    ws: Workspace, *, threads: int | None = None, memory_limit: str | None = None, cache_metadata: bool = False,
    spill_directory: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that reads the workspace (and writes nothing to it).

    `cache_metadata` keeps Parquet footers between statements: a selection reads the same
    thousands of shard files more than once. Short-lived connections only, as a file
    rewritten in place during a long session could be described by its old footer.
    `memory_limit` caps DuckDB's memory; past it, joins, sorts and temporary tables spill
    to `spill_directory` (a local folder the caller owns; DuckDB's default is ./.tmp).
    """
    # DuckDB's own progress bar writes to stdout, where query results go: commands show
    # their progress with rich instead.
    con = duckdb.connect(config={"preserve_insertion_order": False})
    con.execute("SET enable_progress_bar = false")
    if cache_metadata:
        con.execute("SET parquet_metadata_cache = true")
    if threads:
        con.execute("SET threads = $n", {"n": int(threads)})
    if memory_limit:
        con.execute("SET memory_limit = $m", {"m": memory_limit})
    if spill_directory:
        con.execute("SET temp_directory = $d", {"d": spill_directory})
    if not ws.is_local:
        con.register_filesystem(ws.fs)
    set_variables(con, workspace=ws.url(ws.root))
    return con


def bind_run(con: duckdb.DuckDBPyConnection, ws: Workspace, run_id: str, predictions_files: list[str] | None = None,
             pairs_files: list[str] | None = None) -> None:
    """Views of one scoring run's committed shard files (sql/run_inputs.sql): run_predictions,
    run_pairs and run_images. The connection needs the manifest view. The files are listed
    here unless the caller has them."""
    bind_run_files(
        con,
        ws,
        tables.PREDICTIONS.files(ws, run_id=run_id) if predictions_files is None else predictions_files,
        tables.PAIRS.files(ws, run_id=run_id) if pairs_files is None else pairs_files,
        run_id=run_id,
    )
    run_file(con, "run_inputs")


def bind_run_files(con: duckdb.DuckDBPyConnection, ws: Workspace, predictions_files: list[str], pairs_files: list[str],
                   **values) -> None:
    """Point run_predictions and run_pairs at these files (views re-read them at every query)."""
    set_variables(con, predictions_files=[ws.url(p) for p in predictions_files],
                  pairs_files=[ws.url(p) for p in pairs_files], **values)


def table_exists(ws: Workspace, table: str) -> bool:
    """Whether a table has at least one readable file (committed shards for run tables)."""
    return bool(tables.table(table).files(ws))


def create_views(con: duckdb.DuckDBPyConnection, ws: Workspace, names=tuple(CREATED_BY)) -> list[str]:
    """Run sql/views.sql for the tables `names`, skipping the views of tables that do not exist yet."""
    present = []
    for statement in statements("views"):
        match = _VIEW_NAME.search(statement)
        table = match.group(1) if match else None
        if table in CREATED_BY and (table not in names or not table_exists(ws, table)):
            continue
        con.execute(statement)
        if table in CREATED_BY:
            present.append(table)
    return present


def register_empty(con: duckdb.DuckDBPyConnection, name: str, schema: pa.Schema) -> None:
    """Stand in for a table that does not exist yet with an empty one of its schema."""
    con.register(name, schema.empty_table())


def missing_table_error(exc: Exception, ws: Workspace) -> MadmineError | None:
    """A clear error for a query naming a table the workspace does not hold yet."""
    match = _MISSING_TABLE.search(str(exc))
    if not match:
        return None
    table = match.group(1).lower()
    if table in CREATED_BY:
        return MadmineError(
            f"table {table!r} does not exist yet in workspace {ws.uri}: it is written by `{CREATED_BY[table]}`"
        )
    return MadmineError(f"no table named {table!r}; workspace tables are {', '.join(CREATED_BY)}")


READ_ONLY = ("SELECT", "EXPLAIN")


def refuse_writes(text: str) -> None:
    """A MadmineError unless every statement of `text` only reads."""
    try:
        kinds = [s.type.name for s in duckdb.extract_statements(text)]
    except duckdb.Error as exc:
        raise MadmineError(f"query failed: {exc}") from exc
    refused = sorted({k for k in kinds if k not in READ_ONLY})
    if refused:
        raise MadmineError(
            f"madmine sql is read-only: {', '.join(refused)} statements are refused (queries only: SELECT, WITH, "
            "FROM, DESCRIBE, SUMMARIZE, EXPLAIN); to save a result use --out FILE --format csv|json|parquet"
        )


class Session:
    """`madmine sql`: a connection whose views follow the workspace as tables appear."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.con = connect(ws)
        self.tables: list[str] = []

    def refresh(self) -> list[str]:
        self.tables = create_views(self.con, self.ws)
        return self.tables

    def query(self, text: str) -> pa.Table:
        """Run one user query; missing tables and SQL mistakes become clear errors.

        The session is read-only: only queries run (SELECT and its forms, EXPLAIN). COPY ... TO,
        CREATE, INSERT, ATTACH, EXPORT, SET, PRAGMA and the rest are refused before anything runs,
        so no statement can write over a workspace table (or anywhere else)."""
        refuse_writes(text)
        self.refresh()
        try:
            relation = self.con.sql(text)
            return relation.to_arrow_table() if relation is not None else pa.table({})
        except duckdb.Error as exc:
            raise missing_table_error(exc, self.ws) or MadmineError(f"query failed: {exc}") from exc
