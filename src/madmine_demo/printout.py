"""The demo's tables, printed with rich: timings, Table 1, Table 2, failure yields."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from madmine.cli.evaluate import selectors_table
from madmine.metrics import Repair
from madmine.names import HELD_OUT, testset_name
from madmine_demo.arena import ArenaResult
from madmine_demo.measure import TAU, Spread, Yield, parent_of
from madmine_demo.world.failures import KINDS


def pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def timings(console: Console, rows: list[tuple[str, float]], total: float) -> None:
    table = Table(title="time per step", title_justify="left")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for step, seconds in rows:
        table.add_row(step, f"{seconds:.1f}")
    table.add_row("[bold]total[/]", f"[bold]{total:.1f}[/]")
    console.print(table)


def model_label(row: dict) -> str:
    """Readable names for Table 1: the target's versions by the round that made them and, beside MAD's
    chain, the strategy whose S trained them (each strategy's chain is a row of its own)."""
    if row["role"] == "target" and row["origin"] == "models table":
        chain = row.get("selection")
        return f"target after round {row['model_round']}" + ("" if chain in (None, "mad") else f" ({chain})")
    if row["role"] == "target":
        return "target (original)"
    return row["model"]


def table1(console: Console, summary_rows: list[dict]) -> None:
    rounds = sorted({r["testset_round"] for r in summary_rows})
    table = Table(title="Table 1: dataset mIoU (%) of every model on every test set", title_justify="left",
                  caption="T(0) held-out: the training domain. T(R+1): wild images drawn from M of round R before "
                          "its S, out of domain removed. * the paper's pairing: f(i) on T(i+1).", caption_justify="left")
    table.add_column("model")
    for r in rounds:
        table.add_column("T(0) held-out" if r == HELD_OUT else testset_name(r), justify="right")
    by_model: dict[str, dict[int, str]] = {}
    order: dict[str, int] = {}
    for row in summary_rows:
        label = model_label(row)
        by_model.setdefault(label, {})[row["testset_round"]] = pct(row["miou"]) + ("*" if row.get("paper_pair") else "")
        order.setdefault(label, row["order"])
    for label in sorted(by_model, key=order.get):
        table.add_row(label, *(by_model[label].get(r, "-") for r in rounds))
    console.print(table)


def labelled_models(arena: ArenaResult, labels: dict[str, str]) -> list[str]:
    """The arena's models that have a label (the original target and the seed-0 runs), in its order."""
    return [name for name in arena.models if name in labels]


def table2(console: Console, arena: ArenaResult, labels: dict[str, str]) -> None:
    table = Table(title=f"the fine-tuned targets on {arena.images} held-out wild images", title_justify="left",
                  caption=f"failures: images with per-image mIoU < {TAU}. The interval resamples the test images "
                          "(paired); it does not cover the spread between training runs.", caption_justify="left")
    for col in ("target", "dataset mIoU (%)", "gain over the original (95% interval)", "per-image mIoU (%)",
                "failures (%)"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for name in labelled_models(arena, labels):
        gain = arena.gain.get(name)
        shown = "-" if gain is None else f"{100 * gain[0]:+.1f} ({100 * gain[1]:+.1f} .. {100 * gain[2]:+.1f})"
        table.add_row(labels.get(name, name), pct(arena.miou.get(name)), shown, pct(arena.per_image.get(name)),
                      pct(arena.failures.get(name)))
    console.print(table)
    kinds = [k for k in KINDS if any(k in v for v in arena.by_kind.values())]
    per_kind = Table(title="held-out wild set by kind of scene: dataset mIoU (%)", title_justify="left")
    per_kind.add_column("target")
    for k in kinds:
        per_kind.add_column(k, justify="right")
    for name in labelled_models(arena, labels):
        per_kind.add_row(labels.get(name, name), *(pct(arena.by_kind.get(name, {}).get(k)) for k in kinds))
    console.print(per_kind)
    comps = Table(title="Table 2 (the paper's): MAD competitions among the fine-tuned targets (madmine compete)",
                  title_justify="left", caption="per class, inside the size bounds, the images on which A and B disagree "
                  "most, out-of-domain images vetoed by the raters, labelled blank by the annotator; a winner only when "
                  "the 95% interval of the mIoU difference (paired bootstrap over the images) excludes 0",
                  caption_justify="left")
    for col in ("A", "B", "images", "vetoed", "mIoU A (%)", "mIoU B (%)", "A - B (95% interval)", "won A : B", "winner"):
        comps.add_column(col, justify="left" if col in ("A", "B", "winner") else "right")
    for c in arena.competitions:
        winner = labels.get(c.winner.split("@")[0], c.winner) if c.winner else "no winner"
        diff = "-" if not c.labelled else (f"{100 * (c.miou_a - c.miou_b):+.1f} ({100 * c.diff_low:+.1f} .. "
                                           f"{100 * c.diff_high:+.1f})")
        comps.add_row(labels.get(c.a.name, c.a.name), labels.get(c.b.name, c.b.name), str(len(c.labelled)),
                      str(len(c.vetoed)), pct(c.miou_a), pct(c.miou_b), diff, f"{c.wins_a} : {c.wins_b}", winner)
    console.print(comps)


def selectors(console: Console, judged) -> None:
    """Every selector of a round judged over the whole corpus with the world's truth, with intervals."""
    console.print(selectors_table(judged))


def failures_by_kind(console: Console, probe: ArenaResult, t0: ArenaResult, labels: dict[str, str]) -> None:
    """Each target's failure rate per kind of scene, on the probe (equal numbers of each kind),
    next to its dataset mIoU on T(0) held-out (what fine-tuning may not forget)."""
    kinds = [k for k in KINDS if any(k in v for v in probe.failures_by_kind.values())]
    table = Table(title=f"failure rate (%) by kind of scene, before and after fine-tuning: {probe.images} probe images "
                        f"({probe.images // max(len(kinds), 1)} of each kind)", title_justify="left",
                  caption=f"failures: per-image mIoU < {TAU}", caption_justify="left")
    table.add_column("target")
    for k in kinds:
        table.add_column(k, justify="right")
    table.add_column("T(0) held-out mIoU (%)", justify="right")
    for name in labelled_models(probe, labels):
        table.add_row(labels.get(name, name), *(pct(probe.failures_by_kind.get(name, {}).get(k)) for k in kinds),
                      pct(t0.miou.get(name)))
    console.print(table)


def yields(console: Console, round_: int, rows: list[Yield]) -> None:
    table = Table(title=f"round {round_}: failure yield (target's per-image mIoU < {TAU} against the true mask)",
                  title_justify="left")
    for col in ("set", "images", "failures (%)", "in-domain failures (%)", "out of domain"):
        table.add_column(col, justify="left" if col == "set" else "right")
    for y in rows:
        table.add_row(y.name, str(y.images), pct(y.rate), pct(y.in_domain_rate), str(y.images - y.in_domain))
    console.print(table)
    kinds = Table(title=f"round {round_}: kinds of scene in each set (%)", title_justify="left")
    kinds.add_column("set")
    for k in KINDS:
        kinds.add_column(k, justify="right")
    for y in rows:
        kinds.add_row(y.name, *(pct(y.kinds.get(k, 0) / y.images if y.images else None) for k in KINDS))
    console.print(kinds)


def failure_rates(console: Console, round_: int, rates: dict[str, tuple[int, float]]) -> None:
    table = Table(title=f"round {round_}: the target's failure rate in the corpus by kind of scene", title_justify="left")
    for col in ("kind", "images", "failures (%)"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for k in KINDS:
        if k in rates:
            table.add_row(k, str(rates[k][0]), pct(rates[k][1]))
    console.print(table)


def seed_spread(console: Console, spread: dict[str, Spread], labels: dict[str, str], seeds: int) -> None:
    """Each compared fine-tuning over its training seeds: is a difference larger than one run's noise?"""
    table = Table(title=f"the spread over {seeds} training seeds (mean ± sd; each run on the same S)",
                  title_justify="left", caption=f"gain: held-out wild dataset mIoU minus the original target's; "
                  f"probe failures: per-image mIoU < {TAU}", caption_justify="left")
    kind = next((s.kind for s in spread.values() if s.kind), "")
    cols = ("target", "seeds", "gain (points)", "per seed", "T(0) held-out mIoU (%)", "probe failures (%)",
            f"probe: {kind} (%)", "fails on its S (%)", "most failures gained on a kind MAD's S does not hold (points)")
    for col in cols:
        table.add_column(col, justify="left" if col in ("target", "per seed") else "right")

    def show(values: list[float], scale: float = 100.0, sign: str = "") -> str:
        mean, sd = Spread.mean_sd(values)
        return f"{scale * mean:{sign}.1f} ± {scale * sd:.1f}" if len(values) > 1 else f"{scale * mean:{sign}.1f}"

    for name, s in spread.items():
        fit = [f for f in s.fit if f is not None]
        table.add_row(labels.get(name, name), str(len(s.gains)), show(s.gains, sign="+"),
                      " ".join(f"{100 * g:+.1f}" for g in s.gains), show(s.t0), show(s.probe_failures),
                      show(s.kind_failures), show(fit) if fit else "-",
                      " ".join(f"{k} {100 * v:+.0f}" for k, v in s.elsewhere if k) or "-")
    console.print(table)


def fit(console: Console, fits: dict[str, dict], labels: dict[str, str]) -> None:
    """Did each fine-tuning fit the S it trained on (the fit guard's figure), and which checkpoint it kept."""
    table = Table(title="fine-tuning: the S it trained on, V held out of S, T(0) (the kept checkpoint against its parent)",
                  title_justify="left", caption=f"failures: per-image mIoU < {TAU}; fixed/broke with 95% Wilson "
                  "intervals in the workspace's repair table", caption_justify="left")
    for col in ("target", "S failures", "V failures", "T(0) mIoU", "kept step", "fixed/failures, broke/passing"):
        table.add_column(col, justify="left" if col in ("target", "fixed/failures, broke/passing") else "right")
    for name, r in fits.items():
        def change(before, after, scale=100.0):
            return "-" if before is None or after is None else f"{scale * before:.0f} -> {scale * after:.0f}%"

        table.add_row(labels.get(name, name), change(r.get("parent_s_failures"), r.get("s_failures")),
                      change(r.get("parent_v_failures"), r.get("v_failures")),
                      f"{100 * r['parent_val_miou']:.1f} -> {100 * r['val_miou']:.1f}", str(r.get("step") or "-"),
                      "\n".join(f"{x['set']}: fixed {x['fixed']}/{x['failures']}, broke {x['broke']}/{x['passing']}"
                                for x in r.get("repair") or ()))
    console.print(table)
    for name, r in fits.items():
        if r.get("fit_warning"):
            console.print(f"[yellow]{escape(labels.get(name, name))}: did not fit S:[/] {escape(r['fit_warning'])}",
                          highlight=False)


def repair_by_kind(console: Console, probe: ArenaResult, repairs: dict[str, dict[str, Repair]],
                   labels: dict[str, str]) -> None:
    """What each fine-tuned target fixed and broke against its parent, per kind of scene on the probe."""
    kinds = [k for k in KINDS if any(k in per for per in repairs.values())]
    per_kind = probe.images // max(len(kinds), 1)
    table = Table(title=f"repair by kind of scene on the probe ({per_kind} scenes of each kind): each fine-tuned target "
                        "against its parent", title_justify="left",
                  caption=f"fixed: of the parent's failures (per-image mIoU < {TAU}), those it passes; broke: of the "
                          "parent's passing scenes, those it fails; mIoU: mean per-image mIoU, parent -> target",
                  caption_justify="left")
    table.add_column("target (parent)")
    for k in kinds:
        table.add_column(k, justify="right")
    for name in labelled_models(probe, labels):
        if name not in repairs:
            continue
        cells = []
        for k in kinds:
            r = repairs[name].get(k)
            cells.append("-" if r is None else f"fixed {r.fixed}/{r.failures}\nbroke {r.broke}/{r.passing}\n"
                         f"mIoU {r.parent_image_miou:.2f}->{r.image_miou:.2f}")
        parent = parent_of(name)
        table.add_row(f"{labels.get(name, name)}\n(from {labels.get(parent, parent)})", *cells)
    console.print(table)


def findings(result, labels: dict[str, str]) -> list[str]:
    """The run's findings as sentences, every figure taken from the tables this run printed: what the README
    and docs/demo.md may quote of it, and nothing more."""
    out = []
    for r, rows in sorted(result.yields.items()):
        by = {y.name: y for y in rows}
        m, s = next(y for y in rows if y.name.startswith("M:")), next(y for y in rows if y.name.startswith("S:"))
        rm, rs = by[f"random sample, |M| = {m.images}"], by[f"random sample, |S| = {s.images}"]
        out.append(f"Round {r}: MAD's M holds {m.rate:.1%} failures ({m.failures} of {m.images}) and its S {s.rate:.1%} "
                   f"({s.failures} of {s.images}), against {rm.rate:.1%} and {rs.rate:.1%} of random samples of the same "
                   "sizes.")
        others = [y for y in rows if y.name.endswith("selection, |S|")]
        if others:
            out.append(f"Round {r}, the other strategies' S at MAD's budget: " + "; ".join(
                f"{y.name.split()[0]} {y.rate:.1%} failures ({y.failures} of {y.images}, "
                f"{y.images - y.in_domain} out of domain)" for y in others) + ".")
    for r, judged in sorted(result.selectors.items()):
        rows = [row for row in judged.rows if row.get("auroc") is not None]
        if not rows:
            continue
        best = max(rows, key=lambda row: row["auroc"])
        shown = [row for row in rows if row["selector"] in ("d max", "mad", "entropy", "learned", "random")]
        out.append(f"Round {r}, every selector over the whole corpus ({judged.pool} images, {rows[0]['failures']} "
                   "failures), AUROC with its 95% interval: " + "; ".join(
                       f"{row['selector']} {row['auroc']:.3f} ({row['auroc_low']:.3f}..{row['auroc_high']:.3f})"
                       for row in shown) + f". Highest: {best['selector']} ({best['auroc']:.3f}).")
    if result.learned is not None:
        t = result.learned
        out.append(f"Round 1's failure predictor, on {t.heldout} held-out rated images ({t.heldout_failures} failures): "
                   f"AUROC {t.auroc:.3f} (d alone {t.auroc_d:.3f}, entropy alone {t.auroc_entropy:.3f}); these images are "
                   "all among MAD's picks of round 0.")
    gains = [(name, g) for name, g in result.arena.gain.items() if name in labels]
    if gains:
        out.append(f"On {result.arena.images} held-out wild images, dataset mIoU gain over the original target (95% "
                   "interval over the images): " + "; ".join(
                       f"{labels[n]} {100 * v:+.1f} ({100 * lo:+.1f}..{100 * hi:+.1f})" for n, (v, lo, hi) in gains) + ".")
    for c in result.arena.competitions:
        verdict = (f"{labels.get(c.winner.split('@')[0], c.winner)} wins" if c.winner
                   else "no winner (the interval holds 0)")
        out.append(f"MAD competition {labels.get(c.a.name, c.a.name)} against {labels.get(c.b.name, c.b.name)}, "
                   f"{len(c.labelled)} images: A - B {100 * (c.miou_a - c.miou_b):+.1f} points "
                   f"({100 * c.diff_low:+.1f}..{100 * c.diff_high:+.1f}), images won {c.wins_a}:{c.wins_b}; {verdict}.")
    return out
