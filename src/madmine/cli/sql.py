"""`madmine sql [QUERY]`: DuckDB over every workspace table, or an interactive shell."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from madmine.cli.state import get_config, user_errors
from madmine.duck import Session
from madmine.errors import MadmineError
from madmine.workspace import Workspace


@user_errors
def sql(
    query: str = typer.Argument(None, help="SQL over the workspace views; omit for an interactive shell."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv, json or parquet (parquet needs --out)."),
    out_arg: str = typer.Option(None, "--out", "-o", help="Write the result to this file (outside the workspace)."),
    memory_limit: str = typer.Option("50%", "--memory-limit", help="Most memory a query may use, e.g. 4GB or 50% (of RAM)."),
) -> None:
    """DuckDB over every workspace table (manifest, predictions, pairs, ..., models), local or s3://."""
    if fmt not in FORMATS:
        raise MadmineError(f"unknown --format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "parquet" and out_arg is None:
        raise MadmineError("--format parquet writes a file: add --out FILE.parquet")
    ws = Workspace.from_config(get_config())
    out = check_out(out_arg, ws) if out_arg is not None else None
    session = Session(ws, memory_limit=memory_limit)
    try:
        if query is None:
            shell(session, sys.stdin, Console())
            return
        result = session.query(query)
        try:
            emit(result, fmt, out, Console())
        except OSError as exc:
            raise MadmineError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    finally:
        session.close()


def check_out(out_arg: str, ws: Workspace) -> Path:
    """--out names a file this command may create: not a folder, in a folder that exists, outside the workspace."""
    out = Path(out_arg)
    if out_arg.endswith(("/", "\\")) or out.is_dir():
        raise MadmineError(f"--out {out_arg} is a folder: name a file, e.g. {out / 'result.csv'}")
    if not out.resolve().parent.is_dir():
        raise MadmineError(f"--out {out_arg}: the folder {out.resolve().parent} does not exist")
    if out.exists() and not out.is_file():
        raise MadmineError(f"--out {out_arg} is not a regular file")
    if ws.is_local:
        root = Path(ws.root).resolve()
        if out.resolve() == root or root in out.resolve().parents:
            raise MadmineError(f"--out {out_arg} is inside the workspace {ws.uri}: madmine sql writes nothing there; "
                               "write the result elsewhere")
    return out


FORMATS = ("table", "csv", "json", "parquet")
MAX_TABLE_ROWS = 200


def emit(result, fmt: str, out: Path | None, console: Console) -> None:
    """Print or write a query result in the format asked for."""
    if fmt == "parquet":
        pq.write_table(result, out, compression="zstd")
        return
    if fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(result, buf)
        text = buf.getvalue().decode()
    elif fmt == "json":
        text = json.dumps(result.to_pylist(), default=str, indent=1) + "\n"
    else:
        text = None
    if text is not None:
        if out is not None:
            out.write_text(text)
        else:
            sys.stdout.write(text)
        return
    table = Table(show_lines=False)
    for f in result.schema:
        numeric = pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
        table.add_column(f.name, justify="right" if numeric else "left")
    for row in result.slice(0, MAX_TABLE_ROWS).to_pylist():
        table.add_row(*(Text(_cell(v)) for v in row.values()))
    if out is not None:
        with open(out, "w") as fh:
            Console(file=fh, width=200).print(table)
        return
    console.print(table)
    more = result.num_rows - MAX_TABLE_ROWS
    console.print(f"{result.num_rows} rows" + (f" ({more} not shown: use --format csv --out FILE)" if more > 0 else ""))


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def shell(session, lines, console: Console) -> None:
    """A small REPL: statements end with ';'; .tables lists the views; .quit or EOF leaves."""
    interactive = lines.isatty()
    if interactive:
        console.print(f"madmine sql on {session.ws.uri}: end statements with ';', .tables, .quit")
    buffer: list[str] = []
    while True:
        if interactive:
            console.print("madmine> " if not buffer else "   ...> ", end="")
        line = lines.readline()
        if not line:
            break
        stripped = line.strip()
        if not buffer and stripped in (".quit", ".exit"):
            break
        if not buffer and stripped == ".tables":
            try:
                console.print(", ".join(session.refresh()) or "(no tables yet)")
            except MadmineError as exc:
                console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            continue
        if stripped:
            buffer.append(line)
        if buffer and stripped.endswith(";"):
            text, buffer = "".join(buffer), []
            try:
                emit(session.query(text), "table", None, console)
            except MadmineError as exc:
                console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    if buffer:
        try:
            emit(session.query("".join(buffer)), "table", None, console)
        except MadmineError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("sql")(sql)
