"""`madmine rate ...`: weak labels from raters through the rating web app (thin)."""

from __future__ import annotations

import json
import uuid

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from madmine.cli import state as cli_state
from madmine.errors import MadmineError
from madmine.workspace import Workspace

out = Console()
err = Console(stderr=True)
rate_app = typer.Typer(
    help="Weak labels: raters score the target's predictions on the round's candidates (1 bad .. 5 excellent).",
    no_args_is_help=True,
)

RoundOpt = typer.Option(None, "--round", "-r", help="Round; default: the newest round with candidates.")
StrategyOpt = typer.Option("mad", help="Which candidates table: tables/candidates/round-<R>-<strategy>.parquet.")
CompetitionOpt = typer.Option(
    None, "--competition", help="Rate a MAD competition's images instead of a round's (its id, as `madmine compete` "
    "prints it): a rater's out-of-domain vote keeps an image out of the competition."
)


def register(app: typer.Typer) -> None:
    app.add_typer(rate_app, name="rate")


def _context(round_: int | None, strategy: str, competition: str | None = None):
    from madmine.steps.rating.roundset import latest_round, load_round

    config = cli_state.get_config()
    ws = Workspace.from_config(config)
    if competition is not None:
        from madmine.steps.evaluation.compete import rating_set

        return config, ws, rating_set(config, ws, competition)
    if round_ is None:
        round_ = latest_round(ws, strategy)
    return config, ws, load_round(ws, config, round_, strategy)


def _check_writable(ws: Workspace) -> None:
    """Votes are stored as they come: a workspace that cannot be written fails now, not at the first vote."""
    probe = ws.path("rating", f".tmp-write-check-{uuid.uuid4().hex}")
    try:
        ws.put_bytes(probe, b"")
        ws.remove(probe)
    except OSError as exc:
        raise MadmineError(
            f"the workspace {ws.uri} cannot be written ({exc.strerror or exc}): votes could not be stored; "
            "serve from a writable workspace"
        ) from None


@rate_app.command()
@cli_state.user_errors
def serve(
    round_: int = RoundOpt,
    strategy: str = StrategyOpt,
    competition: str = CompetitionOpt,
    host: str = typer.Option(None, help="Address to bind; default \\[rating] host (127.0.0.1). Others get a warning."),
    port: int = typer.Option(None, help="Port; default \\[rating] port (8765); 0 picks a free one."),
    behind_tls: bool = typer.Option(
        None, "--behind-tls/--no-behind-tls", help="Raters reach the app through a TLS proxy: Secure cookies; "
        "default \\[rating] behind_tls. X-Forwarded-Proto: https from \\[rating] trusted_proxies does the same."
    ),
) -> None:
    """Serve the rating page until Ctrl-C. Every vote is stored before the next image shows."""
    from madmine.steps.rating.app import create_app
    from madmine.steps.rating.server import base_url, bind, exposure_warning
    from madmine.steps.rating.server import serve as run

    config, ws, rs = _context(round_, strategy, competition)
    host = host or config.rating.host
    port = config.rating.port if port is None else port
    warning = exposure_warning(host)
    if warning:
        err.print(f"[bold red]{escape(warning)}[/]", highlight=False, soft_wrap=True)
    _check_writable(ws)
    sock = bind(host, port)
    url = base_url(sock)
    target = f"{rs.target}@{rs.versions[rs.target]}"
    what = f"round {rs.round}" if isinstance(rs.round, int) else f"competition {competition} (A and B shown blind)"
    out.print(f"rating {what} ({len(rs)} images, target {target}) at {url}/", highlight=False)
    out.print("give each rater their link: madmine rate add-rater NAME --url " + (config.rating.public_url or url),
              highlight=False)
    tls = config.rating.behind_tls if behind_tls is None else behind_tls
    run(create_app(ws, config, rs, behind_tls=tls), sock, config.rating.trusted_proxies)


@rate_app.command("add-rater")
@cli_state.user_errors
def add_rater(
    name: str = typer.Argument(..., help="The rater's name (letters, digits, . - _)."),
    url: str = typer.Option(None, help="Where raters reach the server; default \\[rating] public_url or http://host:port."),
    print_token: bool = typer.Option(False, "--print-token", help="Also print the rater's API token (for scripts: "
                                     "Authorization: Bearer), on a second line."),
) -> None:
    """Create a rater (or re-key one: their old links, sessions and token stop working) and print
    their sign-in link. The link works once; `madmine rate link NAME` makes another."""
    from madmine.steps.rating.logins import issue_code
    from madmine.steps.rating.tokens import add_rater as add

    config = cli_state.get_config()
    ws = Workspace.from_config(config)
    token = add(ws, name)
    out.print(_link(config, url, issue_code(ws, name)), highlight=False, soft_wrap=True)
    if print_token:
        out.print(token, highlight=False, soft_wrap=True)
    err.print(f"sign-in link for {name}: it works once (the browser keeps a session); `madmine rate link {name}` "
              f"makes another, `madmine rate revoke {name}` ends every link and session", highlight=False)


@rate_app.command("link")
@cli_state.user_errors
def link(
    name: str = typer.Argument(..., help="An existing rater."),
    url: str = typer.Option(None, help="Where raters reach the server; default \\[rating] public_url or http://host:port."),
) -> None:
    """Print a new one-time sign-in link for a rater (another browser, or a link that was used). Their
    other sessions keep working."""
    from madmine.steps.rating.logins import issue_code

    config = cli_state.get_config()
    out.print(_link(config, url, issue_code(Workspace.from_config(config), name)), highlight=False, soft_wrap=True)


def _link(config, url: str | None, code: str) -> str:
    base = (url or config.rating.public_url or f"http://{config.rating.host}:{config.rating.port}").rstrip("/")
    return f"{base}/login#{code}"


@rate_app.command()
@cli_state.user_errors
def revoke(name: str = typer.Argument(..., help="The rater whose link and token stop working.")) -> None:
    """End a rater's access at once (every server on the workspace refuses their links, sessions and token).
    Their votes stay."""
    from madmine.steps.rating.tokens import revoke as end

    config = cli_state.get_config()
    end(Workspace.from_config(config), name)
    out.print(f"revoked {name}: their links, sessions and token no longer work; their votes are kept", highlight=False)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@rate_app.command()
@cli_state.user_errors
def status(
    round_: int = RoundOpt,
    strategy: str = StrategyOpt,
    competition: str = CompetitionOpt,
    seconds_per_rating: float = typer.Option(None, help="Price every vote at this many seconds instead of measuring."),
    seconds_per_mask: float = typer.Option(None, help="Seconds to draw one mask; default \\[rating] seconds_per_mask (135)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Progress per rater, agreement between raters, images short of raters, the cost ledger, and
    the files of the rating storage that were skipped as unreadable."""
    from madmine.steps.rating.status import report

    config, ws, rs = _context(round_, strategy, competition)
    data = report(ws, config, rs, seconds_per_rating=seconds_per_rating, seconds_per_mask=seconds_per_mask)
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table(title=f"{'round ' if isinstance(data['round'], int) else ''}{data['round']}: {data['candidates']} candidates")
    for col in ("rater", "rated", "out of domain", "last vote"):
        table.add_column(col)
    for p in data["progress"]:
        table.add_row(p["rater"], f"{p['rated']} of {p['of']}", str(p["out_of_domain"]), p["last"] or "-")
    out.print(table)
    if data["pairs"]:
        pairs = Table(title="agreement (Spearman's rho per pair, images both rated on 1..5)")
        for col in ("rater a", "rater b", "shared", "rho"):
            pairs.add_column(col)
        for p in data["pairs"]:
            pairs.add_row(p["rater_a"], p["rater_b"], str(p["shared"]), _fmt(p["spearman"]))
        out.print(pairs)
    out.print(f"Krippendorff's alpha (ordinal): {_fmt(data['krippendorff_alpha_ordinal'], 3)}")
    short = data["short_of_raters"]
    examples = f" (e.g. {', '.join(short[:5])})" if short else ""
    out.print(f"images short of {data['min_raters']} rater(s): {len(short)}{examples}")
    out.print(f"images out of domain: {len(data['out_of_domain'])}")
    led = data["ledger"]
    ledger = Table(title="cost ledger")
    ledger.add_column("item")
    ledger.add_column("hours", justify="right")
    how = "measured from timestamps" if led["measured"] else "priced"
    ledger.add_row(f"rating: {led['ratings']} votes x {led['seconds_per_rating']:.1f} s ({how})", _fmt(led["rating_hours"]))
    ledger.add_row(f"masks drawn: {led['masks']} x {led['seconds_per_mask']:.0f} s", _fmt(led["mask_hours"]))
    ledger.add_row("spent", _fmt(led["spent_hours"]))
    ledger.add_row(f"dense labelling of all {led['candidates']} candidates", _fmt(led["dense_hours"]))
    ledger.add_row("saved", _fmt(led["saved_hours"]))
    out.print(ledger)
    _print_skipped(data["skipped_files"])


def _print_skipped(skipped: list[dict]) -> None:
    if not skipped:
        return
    table = Table(title=f"skipped {len(skipped)} unreadable file(s) of the rating storage (fix or remove them)")
    table.add_column("file")
    table.add_column("why")
    for item in skipped:
        table.add_row(escape(item["path"]), escape(item["reason"]))
    err.print(table)


@rate_app.command("select")
@cli_state.user_errors
def select_(
    round_: int = RoundOpt,
    strategy: str = StrategyOpt,
    n4: int = typer.Option(None, "--n4", help="How many images S gets; default \\[selection] n4."),
    min_raters: int = typer.Option(
        None, help="Raters an image needs to count; default \\[rating] min_raters, else every registered rater."
    ),
    by: str = typer.Option(
        None, "--by", help="mos: lowest mean opinion score (MAD's S); rank: the strategy's own top n4, no ratings "
        "(the paper's baselines). Default: mos for mad, rank for the others."
    ),
    allow_partial: bool = typer.Option(
        False, "--allow-partial", help="Choose S although images that may be in domain still lack ratings."
    ),
) -> None:
    """S = the n4 images of lowest mean opinion score -> tables/selected/round-<R>-mad.parquet (MAD), or a
    baseline's own top n4 -> tables/selected/round-<R>-<strategy>.parquet."""
    from madmine.steps.context import StepContext
    from madmine.steps.rating.choose import ChooseParams, run, tally
    from madmine.steps.rating.roundset import latest_round

    config = cli_state.get_config()
    ctx = StepContext.of(config)
    round_ = latest_round(ctx.ws, strategy) if round_ is None else round_
    params = ChooseParams.from_config(config, round_, strategy=strategy, n4=n4, min_raters=min_raters, by=by,
                                      allow_partial=allow_partial)
    counted = tally(ctx, params, materialise=True)
    if params.how == "mos":  # what the votes say, before S is chosen or refused
        chosen, need = counted.chosen, counted.min_raters
        out.print(
            f"{len(counted.candidates)} candidates: {len(chosen.out_of_domain)} out of domain, {chosen.eligible} rated by "
            f">= {need} rater(s), {len(chosen.lacking)} lack ratings ({len(chosen.unrated)} not rated, "
            f"{len(chosen.short)} short of {need})",
            highlight=False,
        )
        _print_skipped([{"path": p.path, "reason": p.reason} for p in counted.skipped])
    result = run(ctx, params, counted)
    chosen, n4, path, how, rs = result.chosen, params.n4, result.path, result.how, result.tally.candidates
    out.print(f"S ({strategy}, round {rs.round}): {chosen.table.num_rows} images, {how} -> {path}", highlight=False)
    if chosen.table.num_rows < n4:
        err.print(f"[yellow]S has {chosen.table.num_rows} images, fewer than n4={n4}[/]: rate more images or lower --min-raters")
