"""DuckDB over the workspace: one connection, the workspace filesystem, views of its tables.

DuckDB cannot download its httpfs extension here, so s3:// is read through the same fsspec
filesystem the workspace uses, registered on the connection. Every statement comes from
sql/*.sql; values reach SQL only as bound parameters (`SET VARIABLE name = $value`) that
the files read with getvariable(), which also keeps the files runnable in the duckdb CLI.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref
from functools import cache
from pathlib import Path

import duckdb
import pyarrow as pa

from madmine import tables
from madmine.errors import MadmineError
from madmine.readonly_fs import ReadOnlyWorkspaceFS
from madmine.workspace import Workspace

# Every table a workspace may hold, and the command that writes it (for "missing table").
CREATED_BY = {name: table.written_by for name, table in tables.CATALOG.items()}

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_VIEW_NAME = re.compile(r"CREATE\s+OR\s+REPLACE\s+VIEW\s+(\w+)", re.IGNORECASE)
_MISSING_TABLE = re.compile(r"Table with name (\w+) does not exist", re.IGNORECASE)
_PYTHON_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")


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


def create_views(con: duckdb.DuckDBPyConnection, ws: Workspace, names=tuple(CREATED_BY), *,
                 failures: dict | None = None) -> list[str]:
    """Run sql/views.sql for the tables `names`, skipping the views of tables that do not exist yet.

    With `failures` (a dict), a table whose view cannot be created (an unreadable file) is
    left out and its error kept there under its name, so that the other tables stay queryable.
    """
    present = []
    for statement in statements("views"):
        match = _VIEW_NAME.search(statement)
        table = match.group(1) if match else None
        if table in CREATED_BY and (table not in names or not table_exists(ws, table)):
            continue
        try:
            con.execute(statement)
        except duckdb.Error as exc:
            if failures is None or table not in CREATED_BY:
                raise
            con.execute(f"DROP VIEW IF EXISTS {table}")
            failures[table] = exc
            continue
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


def connect_read_only(
    ws: Workspace, *, memory_limit: str = "50%", temp_limit: str = "4GiB"
) -> tuple[duckdb.DuckDBPyConnection, str]:
    """A DuckDB connection that can read the workspace and write nothing anywhere, and the
    private temporary folder it spills to (the caller removes it).

    Read-only is a property of the connection, not only of the statements it is given:
    external access is off, so no local path, extension or URL is reachable; the workspace
    is reached only through madmine.readonly_fs (`madmine://`), which opens files for
    reading alone; memory is capped at `memory_limit` and spilling at `temp_limit`, in a
    fresh folder of the system's temporary directory; the configuration is then locked, so
    no statement can undo any of it. `workspace` is bound to the read-only root, so
    sql/views.sql runs unchanged.
    """
    con = duckdb.connect(config={"preserve_insertion_order": False})
    temp = tempfile.mkdtemp(prefix="madmine-sql-")
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute("SET temp_directory = $t", {"t": temp})
        con.execute("SET max_temp_directory_size = $s", {"s": temp_limit})
        con.execute("SET memory_limit = $m", {"m": memory_limit})
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        workspace = ReadOnlyWorkspaceFS(ws)
        con.register_filesystem(workspace)
        con.execute("SET allowed_directories = $d", {"d": [workspace.root_url + "/"]})
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        con.close()
        shutil.rmtree(temp, ignore_errors=True)
        raise MadmineError(f"cannot open the query connection: {exc} (check --memory-limit)") from None
    set_variables(con, workspace=workspace.root_url)
    return con, temp


READ_ONLY = ("SELECT",)  # an EXPLAIN of a query counts as one (statement_kinds)
_EXPLAIN_OPTIONS = ("ANALYZE", "ANALYSE")


def _explained(text: str) -> str | None:
    """The statement an EXPLAIN wraps (after ANALYZE or a parenthesised option list), or None."""
    tokens = duckdb.tokenize(text)
    ends = [pos for pos, _ in tokens[1:]] + [len(text)]
    words = [(pos, text[pos:end].strip()) for (pos, kind), end in zip(tokens, ends) if kind.name != "comment"]
    if not words or words[0][1].upper() != "EXPLAIN":
        return None
    index = 1
    if index < len(words) and words[index][1].upper() in _EXPLAIN_OPTIONS:
        index += 1
    elif index < len(words) and words[index][1].startswith("("):
        depth = 0
        while index < len(words):
            depth += words[index][1].count("(") - words[index][1].count(")")
            index += 1
            if depth <= 0:
                break
    return text[words[index][0]:] if index < len(words) else None


def statement_kinds(text: str) -> list[str]:
    """The kind of every statement of `text`; an EXPLAIN counts as the statement it explains
    (EXPLAIN ANALYZE runs it)."""
    kinds = []
    for statement in duckdb.extract_statements(text):
        kind = statement.type.name
        if kind == "EXPLAIN":
            inner = _explained(statement.query)
            inner_kinds = statement_kinds(inner) if inner else []
            kind = "SELECT" if inner_kinds == ["SELECT"] else " ".join(["EXPLAIN", *inner_kinds[:1]])
        kinds.append(kind)
    return kinds


def refuse_writes(text: str) -> None:
    """A MadmineError unless every statement of `text` only reads (the statement filter, the
    second line behind connect_read_only)."""
    try:
        kinds = statement_kinds(text)
    except duckdb.Error as exc:
        raise MadmineError(f"query failed: {exc}") from exc
    refused = sorted({k for k in kinds if k not in READ_ONLY})
    if refused:
        raise MadmineError(
            f"madmine sql is read-only: {', '.join(refused)} statements are refused (queries only: SELECT, WITH, "
            "FROM, DESCRIBE, SUMMARIZE, EXPLAIN of a query); to save a result use --out FILE --format csv|json|parquet"
        )


def query_error(exc: duckdb.Error, ws: Workspace, memory_limit: str, unreadable: dict | None = None) -> MadmineError:
    """A one-paragraph error for a failed user query (no Python traceback from the filesystem);
    `unreadable` holds the errors of the views that could not be created (create_views)."""
    match = _MISSING_TABLE.search(str(exc))
    table = match.group(1).lower() if match else None
    if table in (unreadable or {}):
        return MadmineError(f"table {table!r} cannot be read: {_short(unreadable[table])}")
    missing = missing_table_error(exc, ws)
    if missing is not None:
        return missing
    text = _short(exc)
    if isinstance(exc, duckdb.OutOfMemoryException):
        return MadmineError(f"query failed: {text} -- the query needs more memory than madmine sql allows "
                            f"(--memory-limit {memory_limit}); raise --memory-limit or narrow the query")
    if isinstance(exc, duckdb.PermissionException):
        text += " -- madmine sql reads the workspace's tables only (its views: .tables in the shell)"
    return MadmineError(f"query failed: {text}")


def _short(exc: duckdb.Error) -> str:
    """DuckDB's message; for an error raised in madmine.readonly_fs, its exception's line alone."""
    text = str(exc)
    if "Traceback (most recent call last)" in text:  # raised in madmine.readonly_fs: its exception line says it
        raised = [line for line in text.splitlines() if _PYTHON_EXCEPTION.match(line)]
        return raised[-1].split(": ", 1)[1] if raised else text.splitlines()[0]
    return text.splitlines()[0] if isinstance(exc, duckdb.OutOfMemoryException) else text


class Session:
    """`madmine sql`: a read-only connection whose views follow the workspace as tables appear."""

    def __init__(self, ws: Workspace, *, memory_limit: str = "50%"):
        self.ws = ws
        self.memory_limit = memory_limit
        self.con, temp = connect_read_only(ws, memory_limit=memory_limit)
        self._cleanup = weakref.finalize(self, _close, self.con, temp)
        self.tables: list[str] = []
        self.unreadable: dict[str, duckdb.Error] = {}

    def close(self) -> None:
        self._cleanup()

    def refresh(self) -> list[str]:
        """The views of the tables the workspace holds now (a table that cannot be read is left out)."""
        self.unreadable = {}
        try:
            self.tables = create_views(self.con, self.ws, failures=self.unreadable)
        except duckdb.Error as exc:
            raise query_error(exc, self.ws, self.memory_limit) from exc
        return self.tables

    def query(self, text: str) -> pa.Table:
        """Run one user query; missing tables and SQL mistakes become clear errors.

        The session is read-only twice over: its connection cannot write (connect_read_only),
        and only queries run (SELECT and its forms, EXPLAIN of a query): COPY ... TO, CREATE,
        INSERT, ATTACH, EXPORT, SET, PRAGMA, EXPLAIN ANALYZE of any of them and the rest are
        refused before anything runs."""
        refuse_writes(text)
        self.refresh()
        try:
            relation = self.con.sql(text)
            return relation.to_arrow_table() if relation is not None else pa.table({})
        except duckdb.Error as exc:
            raise query_error(exc, self.ws, self.memory_limit, self.unreadable) from exc


def _close(con: duckdb.DuckDBPyConnection, temp: str) -> None:
    con.close()
    shutil.rmtree(temp, ignore_errors=True)
