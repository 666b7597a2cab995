"""`madmine annotate export | import | push | pull`: pixel labels through the annotation tools people use (thin)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from madmine.cli import state as cli_state
from madmine.cli.rate import RoundOpt, StrategyOpt
from madmine.workspace import Workspace

out = Console()
err = Console(stderr=True)
annotate_app = typer.Typer(
    help="Pixel labels: export S (pre-filled with the target's prediction) or a test set (blank) to Label Studio, "
    "CVAT or COCO, import the results.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(annotate_app, name="annotate")


@annotate_app.command("export")
def export_cmd(
    fmt: str = typer.Option(..., "--format", "-f", help="labelstudio | cvat | coco"),
    out_dir: Path = typer.Option(..., "--out", help="A new (or empty) folder."),
    round_: int = RoundOpt,
    which: str = typer.Option("s", "--set", help="s: the images of lowest MOS; test: the round's test set."),
    strategy: str = StrategyOpt,
    document_root: Path = typer.Option(
        None, help="Label Studio only: the server's LOCAL_FILES_DOCUMENT_ROOT, a folder above --out (default: its parent)."
    ),
    image_prefix: str = typer.Option(
        None, help="Label Studio only: URL prefix of the images when they are served elsewhere (no local-files storage)."
    ),
    prefill: str = typer.Option(
        None, "--prefill", help="MODEL (NAME, NAME@VERSION or NAME@STRATEGY) whose prediction starts every mask, or "
        "'none' for blank masks. Default: the round's target for S, blank for test sets. A pre-filled test set is "
        "biased toward that model: annotators who correct a mask drift toward it."
    ),
) -> None:
    """The set's images for an annotation tool, in its own format: S with the target's prediction as a
    pre-annotation, test sets blank (unless --prefill)."""
    from madmine.steps.annotation.bundle import DEFAULT_PREFILL
    from madmine.steps.annotation.exchange import ExportParams, run_export
    from madmine.steps.context import StepContext
    from madmine.steps.rating.roundset import latest_round

    ctx = StepContext.of(cli_state.get_config())
    config = ctx.config
    round_ = latest_round(ctx.ws, strategy) if round_ is None else round_
    count, files = run_export(ctx, ExportParams(fmt, out_dir, round_, which, strategy, image_prefix, document_root,
                                                DEFAULT_PREFILL if prefill is None else prefill))
    start = "blank masks" if (prefill is None and which == "test") or (prefill or "").lower() in ("none", "blank") else (
        f"masks pre-filled with {prefill or config.target.name}")
    out.print(f"exported {count} images of round {round_} (set {which}, {start}) to {out_dir}:", highlight=False)
    if which == "test" and start != "blank masks":
        err.print("[yellow]warning:[/] a pre-filled test set favours the pre-filling model in Table 1", highlight=False)
    for f in files:
        out.print(f"  {f}", highlight=False)
    if fmt == "labelstudio":
        out.print(f"next: follow {out_dir / 'README.md'} (or `madmine annotate push --to labelstudio`)", highlight=False)


@annotate_app.command("import")
def import_cmd(
    path: Path = typer.Argument(..., help="The tool's export: a file, a folder, or (CVAT) a .zip."),
    fmt: str = typer.Option(..., "--format", "-f", help="labelstudio | cvat | coco"),
    round_: int = typer.Option(None, "--round", "-r", help="Round of the labels; default: from madmine-export.json."),
    require_all: bool = typer.Option(False, help="Fail unless every exported image has a finished annotation."),
) -> None:
    """Finished annotations -> labels/<image_id>.png (255 = ignore) and the `labels` table; all or nothing."""
    from madmine.steps.annotation.exchange import ImportParams, run_import, unknown_round_warning
    from madmine.steps.context import StepContext

    ctx = StepContext.of(cli_state.get_config())
    table, unfinished = run_import(ctx, ImportParams(fmt, path, round_, require_all))
    out.print(f"imported {table.num_rows} label masks from {path}", highlight=False)
    if table.column("round").null_count:
        err.print(f"[yellow]warning:[/] {unknown_round_warning(path)}", highlight=False)
    if unfinished:
        err.print(f"[yellow]{unfinished} image(s) have no finished annotation yet[/]; import again when they do")


def _live(tool: str) -> None:
    if tool != "labelstudio":
        raise typer.BadParameter(f"only labelstudio can be driven live, got {tool!r}; use export/import for cvat and coco")


@annotate_app.command("push")
def push_cmd(
    to: str = typer.Option(..., "--to", help="labelstudio"),
    round_: int = RoundOpt,
    which: str = typer.Option("s", "--set", help="s: the images of lowest MOS; test: the round's test set."),
    strategy: str = StrategyOpt,
    prefill: bool = typer.Option(None, "--prefill/--no-prefill",
                                 help="The target's prediction as a pre-annotation (default: for s, not for test)."),
) -> None:
    """The round's Label Studio project (url and token: the config's labelstudio section): images served, tasks added.

    Creates the project once per round and set, or reuses it; pushing again adds only what is missing.
    """
    from madmine.steps.annotation.lsproject import push
    from madmine.steps.rating.roundset import latest_round

    _live(to)
    config = cli_state.get_config()
    ws = Workspace.from_config(config)
    round_ = latest_round(ws, strategy) if round_ is None else round_
    result = push(ws, config, round_, which, strategy, prefill)
    verb = "created" if result.created else "reused"
    out.print(f"{verb} project {result.project_id}: added {result.added} tasks, {result.present} already there; "
              f"images served by {result.storage} storage", highlight=False)
    out.print(f"label here: {result.project_url}", highlight=False)
    out.print(f"then: madmine annotate pull --from labelstudio --round {round_} --set {which}", highlight=False)


@annotate_app.command("pull")
def pull_cmd(
    source: str = typer.Option(..., "--from", help="labelstudio"),
    round_: int = RoundOpt,
    which: str = typer.Option("s", "--set", help="s: the images of lowest MOS; test: the round's test set."),
    strategy: str = StrategyOpt,
    force: bool = typer.Option(False, help="Import every finished annotation again, not only new or changed ones."),
    require_all: bool = typer.Option(False, help="Fail unless every task has a finished annotation."),
) -> None:
    """Finished annotations of the round's project -> labels (same checks as `import`); lists what is unlabelled."""
    from madmine.steps.annotation.lsproject import pull
    from madmine.steps.rating.roundset import latest_round

    _live(source)
    config = cli_state.get_config()
    ws = Workspace.from_config(config)
    round_ = latest_round(ws, strategy) if round_ is None else round_
    result = pull(ws, config, round_, which, strategy, force, require_all)
    out.print(f"imported {result.imported} label masks from project {result.project_id} "
              f"({result.unchanged} unchanged since the last pull)", highlight=False)
    if result.unlabelled:
        shown = ", ".join(result.unlabelled[:10]) + (" ..." if len(result.unlabelled) > 10 else "")
        err.print(f"[yellow]{len(result.unlabelled)} image(s) still unlabelled[/]: {shown}; label them at "
                  f"{result.project_url} and pull again", highlight=False)
    if result.no_regions:
        shown = "; ".join(result.no_regions[:10]) + (" ..." if len(result.no_regions) > 10 else "")
        err.print(f"[yellow]{len(result.no_regions)} of them were submitted with no brush or polygon region[/], so "
                  f"nothing was imported for them (never an all-background mask): {shown}", highlight=False)
    if result.not_pushed:
        err.print(f"[yellow]{len(result.not_pushed)} image(s) were never pushed[/]; push again", highlight=False)
