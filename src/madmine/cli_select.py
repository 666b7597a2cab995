"""The `bounds`, `select` and `sql` commands, added to the main typer app by `register`."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from madmine.cli_state import user_errors
from madmine.errors import MadmineError

err = Console(stderr=True)


def _config():
    from madmine.cli_state import get_config

    return get_config()


@user_errors
def bounds(
    labels: str = typer.Argument(..., help="Folder or s3:// prefix of PNG label maps (class index per pixel, 255 = ignore)."),
    workers: int = typer.Option(4, help="Parallel label readers."),
) -> None:
    """Size bounds per class: quartiles of area fractions over labelled images -> tables/bounds."""
    from madmine.bounds import run_bounds

    config = _config()
    result = run_bounds(config, labels, workers=workers)
    console = Console()
    console.print(f"bounds from {result.labels} label maps -> {escape(result.path)}")
    table = Table()
    for col in ("class", "p", "q", "images"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in result.table.to_pylist():
        p, q = row["p"], row["q"]
        table.add_row(
            row["class_name"],
            "-" if p is None else f"{p:.4f}",
            "-" if q is None else f"{q:.4f}",
            str(row["n_images"]),
        )
    console.print(table)


@user_errors
def select(
    round_: int = typer.Option(..., "--round", "-r", help="Round number (0 = first)."),
    strategy: str = typer.Option("mad", help="mad, or a baseline with MAD's budget: entropy, msp, random."),
    n3: int = typer.Option(None, "--n3", help="Images kept per (competitor, direction, class) group [selection] n3."),
    run_id: str = typer.Option(None, "--run-id", help="Scoring run to select from (default: newest complete)."),
    classes: list[str] = typer.Option(None, "--class", help="Only these classes form groups (repeatable)."),
    out: str = typer.Option(None, "--out", help="Also write the candidates table to this Parquet file."),
) -> None:
    """Select the round's likely failures (top n3 by discrepancy per group) -> tables/candidates."""
    from madmine.select import run_select

    config = _config()
    with err.status("select") as status:
        result = run_select(
            config,
            round_,
            strategy=strategy,
            n3=n3,
            run_id=run_id,
            classes=classes or None,
            out=out,
            on_step=lambda text: status.update(f"select: {text}"),
        )
    print_summary(result)


def print_summary(result) -> None:
    """|M|, per-class counts, overlaps, exclusions: what a user checks before rating."""
    from madmine.select import summarize

    console = Console()
    budget = f", budget {result.budget} = |M| of mad" if result.budget is not None else f", n3 = {result.n3}"
    console.print(
        f"select round {result.round} ({result.strategy}{budget}) from run [bold]{escape(result.run_id)}[/]: "
        f"[bold green]|M| = {result.num_images}[/] images in {result.num_rows} rows -> {escape(result.path)}"
    )
    excluded = ", ".join(f"{n} {reason}" for reason, n in result.excluded.items() if n)
    console.print(
        f"{result.scored_images} images scored; {result.excluded_images} excluded before ranking"
        + (f" ({excluded})" if excluded else "")
    )
    if result.num_rows == 0:
        console.print(
            "[yellow]warning:[/] no image was selected: check the bounds (`madmine sql \"FROM bounds\"`) "
            "and that the run has discrepancies"
        )
        return
    summary = summarize(result.table)
    per_class = Table(title="per class (images)")
    for col in ("class", "images", "by target map", "by competitor map"):
        per_class.add_column(col, justify="left" if col == "class" else "right")
    for name, images, by_target, by_competitor in summary.per_class:
        per_class.add_row(name, str(images), str(by_target), str(by_competitor))
    console.print(per_class)
    if not summary.per_competitor:
        return
    per_comp = Table(title="per competitor (images)")
    for col in ("competitor", "images", "by target map", "by competitor map", "both directions"):
        per_comp.add_column(col, justify="left" if col == "competitor" else "right")
    for row in summary.per_competitor:
        per_comp.add_row(*(str(v) for v in row))
    console.print(per_comp)
    console.print(f"{summary.both_directions} images were selected in both directions (by a target map and a competitor map)")
    if summary.competitor_overlap:
        names = [row[0] for row in summary.per_competitor]
        overlap = Table(title="overlap (images)")
        overlap.add_column("")
        for name in names:
            overlap.add_column(name, justify="right")
        for a in names:
            cells = []
            for b in names:
                key = (a, b) if (a, b) in summary.competitor_overlap else (b, a)
                cells.append("-" if a == b else str(summary.competitor_overlap[key]))
            overlap.add_row(a, *cells)
        console.print(overlap)


@user_errors
def sql(
    query: str = typer.Argument(None, help="SQL over the workspace views; omit for an interactive shell."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv, json or parquet (parquet needs --out)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the result to this file instead of the terminal."),
) -> None:
    """DuckDB over every workspace table (manifest, predictions, pairs, ..., models), local or s3://."""
    from madmine.duck import Session
    from madmine.workspace import Workspace

    if fmt not in FORMATS:
        raise MadmineError(f"unknown --format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "parquet" and out is None:
        raise MadmineError("--format parquet writes a file: add --out FILE.parquet")
    session = Session(Workspace.from_config(_config()))
    if query is None:
        shell(session, sys.stdin, Console())
        return
    emit(session.query(query), fmt, out, Console())


FORMATS = ("table", "csv", "json", "parquet")
MAX_TABLE_ROWS = 200


def emit(result, fmt: str, out: Path | None, console: Console) -> None:
    """Print or write a query result in the format asked for."""
    import io
    import json

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

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
            console.print(", ".join(session.refresh()) or "(no tables yet)")
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
    """Add bounds, select and sql to the main app."""
    app.command("bounds")(bounds)
    app.command("select")(select)
    app.command("sql")(sql)
