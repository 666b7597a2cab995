"""The HTML of the round report: one file, inline CSS, images as data URIs, no script, so it
opens from disk anywhere and can be mailed or archived as it is."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape

from madmine.config import Config
from madmine.names import s_name, testset_name
from madmine.steps.evaluation import evaluate as ev
from madmine.steps.report import plots
from madmine.steps.report.facts import Facts
from madmine.steps.report.gallery import Tile

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1f21;background:#f6f7f9}
header{background:#1f2d3d;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c8d1dc}main{padding:8px 32px 40px;max-width:1280px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:14px 20px;margin:16px 0}
h2{font-size:17px;margin:0 0 10px}h3{font-size:14px;margin:14px 0 6px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #e1e4e8;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px}.card span{color:#586069;font-size:12px}
table{border-collapse:collapse;margin:6px 0}th,td{border-bottom:1px solid #e1e4e8;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f1f3f5}.best{font-weight:700}th.l,td.l{text-align:left}
.note{color:#586069;font-size:12px}.warn{color:#9a6700}
.legend span{display:inline-block;margin:0 12px 4px 0}.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px;border:1px solid #0002}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px}
.tile{border:1px solid #e1e4e8;border-radius:6px;padding:8px}.tile .row{display:flex;gap:6px}
.stack{position:relative;flex:1}.stack img{display:block;width:100%;height:auto}
.stack img.ov{position:absolute;left:0;top:0;width:100%;height:100%;opacity:.62;image-rendering:pixelated}
.stack small{position:absolute;left:4px;top:3px;background:#000a;color:#fff;padding:0 5px;border-radius:3px;font-size:11px}
.meta{font-size:12px;color:#333;margin-top:4px}.meta code{font-size:11px;color:#586069}
img.plot{max-width:100%;height:auto}
"""


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _num(v, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def _table(headers: list[str], rows: list[list[str]], raw: bool = False, left: int = 1) -> str:
    """Text in the first `left` columns (left-aligned), numbers after them."""

    def cls(j: int) -> str:
        return ' class="l"' if j < left else ""

    head = "".join(f"<th{cls(j)}>{escape(h)}</th>" for j, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(j)}>{c if raw else escape(c)}</td>" for j, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(uri: str, alt: str, cls: str = "plot") -> str:
    return f'<img class="{cls}" src="{uri}" alt="{escape(alt)}">'


def legend(config: Config) -> str:
    items = "".join(
        f'<span><i style="background:rgb{tuple(c)}"></i>{escape(n)}</span>' for n, c in zip(config.classes, config.colors)
    )
    return f'<div class="legend">{items}</div>'


def numbers(config: Config, f: Facts) -> str:
    labelled_t = sum(1 for r in f.testset if r["image_id"] in f.labels)
    labelled_round = sum(1 for r in f.labels.values() if r.get("round") == f.round)
    versions = [m for m in f.models if m.get("round") == f.round]
    cards = [
        (f.manifest_images, "images in the corpus"),
        (f.candidate_images, f"candidates M({f.round})"),
        (len(f.votes), f"votes by {len(f.raters)} rater(s)"),
        (f.out_of_domain, "out of domain"),
        (len(f.selected), f"in {s_name(f.round)} (lowest MOS)"),
        (f"{labelled_t}/{len(f.testset)}", f"{testset_name(f.round)} labelled"),
        (labelled_round, f"masks of round {f.round}"),
        (len(versions), "new model versions"),
    ]
    body = '<div class="cards">' + "".join(f"<div class=card><b>{escape(str(v))}</b><span>{escape(t)}</span></div>" for v, t in cards) + "</div>"
    body += (f'<p class="note">The paper\'s names: round {f.round} selects M({f.round}) with the target of earlier rounds, '
             f"fine-tunes on {s_name(f.round)} and draws the test set {testset_name(f.round)}; T(0) is the held-out set "
             "of the training domain.</p>")
    if f.run:
        models = ", ".join(f"{m['name']}@{m['version']} ({m['role']})" for m in f.run.get("models", []))
        counts = f"{f.run['images']} images, {f.run.get('errors', 0)} errors; " if "images" in f.run else ""
        body += (f'<p class="note">newest complete scoring run <code>{escape(f.run["run_id"])}</code>: '
                 f"{escape(counts)}models {escape(models)}</p>")
    return body


def table1(f: Facts) -> str:
    if f.summary is None:
        return '<p class="warn">No evaluation yet: run <code>madmine evaluate</code> once a test set is labelled.</p>'
    out = ""
    for value, title in (("miou", "dataset mIoU (%), one confusion matrix per test set"),
                         ("per_image_miou", "per-image mean mIoU (%), the mean of each image's own mIoU")):
        headers, rows = ev.table1(f.summary, value)
        trained = {r["label"]: r.get("trained_on") or "" for r in f.summary.to_pylist()}
        paired = ev.paper_pairs(f.summary)
        best = [max((v for _, vals in rows if (v := vals[j]) is not None), default=None) for j in range(len(headers))]
        cells = [[escape(label), escape(trained.get(label, ""))]
                 + [f'<span class="{"best" if v is not None and v == best[j] else ""}">{_pct(v)}'
                    f'{"*" if (label, headers[j]) in paired else ""}</span>'
                    for j, v in enumerate(vals)] for label, vals in rows]
        out += f"<h3>{escape(title)}</h3>" + _table(["model", "trained on"] + headers, cells, raw=True, left=2)
    if ev.paper_pairs(f.summary):
        out += ('<p class="note">* the paper\'s pairing: f(i) on T(i+1), the target version that selected M(i) on the '
                "test set drawn from it; the other cells measure every version on every set.</p>")
    summary = f.summary.to_pylist()
    sizes = {r["testset"]: f"{r['n_labelled']}/{r['n_images']}" for r in summary}
    out += '<p class="note">labelled images per test set: ' + escape(", ".join(f"{k} {v}" for k, v in sizes.items()))
    out += f" · evaluated {escape(str(summary[0]['evaluated_at'])[:19])} UTC</p>" if summary else "</p>"
    errors = [r for r in summary if r["error"]]
    for r in errors:
        out += f'<p class="warn">{escape(r["label"])} on {escape(r["testset"])}: {escape(r["error"])}</p>'
    return out


def versions(config: Config, f: Facts) -> str:
    """Every fine-tuned version: which round and strategy made it, from what, on which images."""
    if not f.models:
        return (f'<p class="note">No fine-tuned version yet; every model runs as configured ({escape(config.target.name)} '
                "trained on S(0)).</p>")
    from madmine.names import trained_on

    rows = [[f"{m['model']}@{m['model_version']}", str(m.get("round")), m.get("selection") or "mad",
             trained_on(m.get("round"), m.get("selection")), str(m.get("parent_version") or "–"), _num(m.get("lr"), 6),
             _pct(m.get("val_miou"))] for m in f.models]
    return _table(["version", "round", "strategy", "trained on", "fine-tuned from", "lr", "mIoU on T(0) (%)"], rows,
                  left=5) + ('<p class="note">A strategy\'s version of round R learned from S(0) and the S(1)..S(R+1) that '
                             "strategy chose; name it as NAME@STRATEGY (target@mad, target@entropy) in "
                             "<code>madmine compete</code>.</p>")


def srcc(f: Facts) -> str:
    if not f.curves:
        return '<p class="note">Needs a labelled test set and at least two evaluated models.</p>'
    return _img(plots.srcc(f.curves), "SRCC of the model ranking against the number of test images") + (
        '<p class="note">Spearman correlation between the ranking of the models by dataset mIoU on the whole '
        "test set and on its first k images (the test set's seeded order). Paper: Fig. 7.</p>")


def quality(f: Facts) -> str:
    if f.quality is None or f.quality.num_rows == 0:
        return '<p class="note">No labelled image was scored yet (run <code>madmine evaluate</code> after labelling).</p>'
    rows = f.quality.to_pylist()
    head = ["strategy", "failures", f"precision@{rows[0]['n']}", "AUROC", "AUPR", "base rate"]
    body = [[r["strategy"], f"{r['failures']}/{r['pool']}", _num(r["precision_at_n"], 2), _num(r["auroc"]), _num(r["aupr"]),
             _num(r["base_rate"], 2)] for r in rows]
    return _table(head, body) + (f'<p class="note">failure: the target\'s per-image mIoU below {rows[0]["tau"]} '
                                 f"(scoring run {escape(rows[0]['run_id'])}); pool: every labelled image it scored.</p>")


def selectors(f: Facts) -> str:
    if not f.selectors:
        return ('<p class="note">Not judged yet: draw a corpus sample (<code>madmine sample --size 500</code>), label '
                "it, then <code>madmine evaluate --selectors --round R</code>.</p>")

    def cell(r, key):
        v, low, high = r.get(key), r.get(f"{key}_low"), r.get(f"{key}_high")
        return "–" if v is None else f"{v:.2f}" + ("" if low is None else f" ({low:.2f}..{high:.2f})")

    first = next((r for r in f.selectors if not r.get("note")), f.selectors[0])
    body = [[r["selector"], f"left out: {r['note']}", "", "", "", "", ""] if r.get("note") else
            [r["selector"], cell(r, "auroc"), cell(r, "aupr_error"), cell(r, "fpr95"), cell(r, "spearman"),
             cell(r, "precision_at_m"), cell(r, "precision_at_n4")] for r in f.selectors]
    return _table(["selector", "AUROC", "AUPR-Error", "FPR@95%TPR", "Spearman with mIoU", "precision@|M|", "precision@n4"],
                  body) + (f'<p class="note">{first["pool"]} images no selector chose (a uniform sample of the corpus), '
                           f"{first.get('failures')} failures (per-image mIoU below {first.get('tau')}), "
                           f"{first['pool'] - first['in_domain']} out of domain; 95% bootstrap intervals; precision over "
                           f"the top {first.get('k_m')} and {first.get('k_n4')} of them (|M| and n4, scaled).</p>")


def competitions(f: Facts) -> str:
    if f.competitions is None or f.competitions.num_rows == 0:
        return '<p class="note">No competition yet: <code>madmine compete A B</code>.</p>'
    def interval(r) -> str:
        low, high = r.get("diff_low"), r.get("diff_high")
        return "–" if low is None or high is None else f"{_pct(low)} .. {_pct(high)}"

    body = [[r["model_a"], r["model_b"], f"{r['labelled']}/{r['selected']}", _pct(r["miou_a"]), _pct(r["miou_b"]),
             interval(r), f"{r['wins_a']}:{r['wins_b']}", r["winner"] or "no winner", r.get("protocol") or "d-ranking",
             str(r.get("vetoed") or 0)] for r in f.competitions.to_pylist()]
    return _table(["A", "B", "labelled", "mIoU A (%)", "mIoU B (%)", "A - B, 95% interval", "images won", "winner",
                   "protocol", "vetoed"], body, left=2) + (
        '<p class="note">mad: per class, the images inside the size bounds where A and B disagree most, partitioned '
        "by each model's map, neither model's training images, out-of-domain images vetoed by the raters; d-ranking: "
        "the largest discrepancy over the whole pool. Both scored on blank-started labels. The interval resamples the "
        "images (paired bootstrap); a winner is named only when the whole interval is on its side.</p>")


def per_class(config: Config, f: Facts) -> str:
    rows = f.per_class(config.classes)
    if not rows:
        return f'<p class="warn">No MAD candidates for round {f.round}: run <code>madmine select --round {f.round}</code>.</p>'
    table = _table(["class", "images", "rows by target map", "rows by competitor map"],
                   [[n, str(i), str(t), str(c)] for n, i, t, c in rows])
    chart = _img(plots.class_counts([n for n, *_ in rows], [i for _, i, *_ in rows]), "candidates per class")
    return f'<div style="display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start">{table}{chart}</div>'


def gallery(config: Config, tiles: list[Tile], problems: list[str]) -> str:
    if not tiles:
        why = "; ".join(problems[:3]) or "no candidates"
        return f'<p class="warn">No candidate can be shown: {escape(why)}</p>'
    out = legend(config) + '<div class="gallery">'
    for t in tiles:
        stack = '<div class="stack">{}<img class="ov" src="{}" alt="{} map"><small>{}</small></div>'
        photo = _img(t.photo, f"image {t.image_id}", "photo")
        mos = f" · MOS {t.mos:.2f}" if t.mos is not None else ""
        out += (
            '<div class="tile"><div class="row">'
            f'<div class="stack">{photo}<small>image</small></div>'
            + stack.format(photo, t.target, "target", "target")
            + stack.format(photo, t.other, escape(t.competitor), escape(t.competitor))
            + f'</div><div class="meta">#{t.rank} · d = {_num(t.d)} · class {escape(t.class_name)} · '
            f"{escape(t.competitor)}, partitioned by the {escape(t.direction)} map{mos} <code>{escape(t.image_id[:16])}</code></div></div>"
        )
    out += "</div>"
    if problems:
        out += f'<p class="warn">{len(problems)} image(s) could not be shown: {escape("; ".join(problems[:3]))}</p>'
    return out


def ratings(f: Facts) -> str:
    if not f.votes:
        return f'<p class="note">No votes for round {f.round} yet: <code>madmine rate serve --round {f.round}</code>.</p>'
    out = _img(plots.ratings(f.score_counts(), list(f.mos.values())), "rating distributions")
    pairs, alpha = f.agreement()
    out += f"<p>Krippendorff's alpha (ordinal, over all raters): <b>{_num(alpha)}</b></p>"
    if pairs:
        out += _table(["rater a", "rater b", "images both rated", "Spearman's rho"],
                      [[p.rater_a, p.rater_b, str(p.shared), _num(p.spearman)] for p in pairs], left=2)
    return out


def finetune(f: Facts) -> str:
    if not f.finetune:
        return f'<p class="note">No fine-tuning yet for round {f.round} (<code>madmine finetune</code> writes its curves).</p>'
    return _img(plots.finetune(f.finetune), "fine-tuning curves")


def repair(f: Facts) -> str:
    """Each fine-tuned version against its parent: the failures it fixed and the passing images it broke."""
    if not f.repair:
        return ('<p class="note">No repair figures yet: <code>madmine finetune</code> writes them on V, the S it '
                "trained on and T(0); <code>madmine evaluate</code> on every labelled test set.</p>")
    from madmine.steps.repair import cells

    rows = [[f"{r['model']}@{r['model_version']}", str(r["parent_version"]), r.get("selection") or "mad", r["set"],
             r["source"], *cells(r)] for r in f.repair]
    tau = f.repair[0]["tau"]
    return _table(["version", "fine-tuned from", "strategy", "set", "measured by", "fixed failures",
                   "broke passing images", "per-image mIoU"], rows, left=5) + (
        f'<p class="note">A failure is a per-image mIoU below {tau:g}. Fixed: of the parent\'s failures, those the version '
        "passes; broke: of the parent's passing images, those it fails (share; 95% Wilson interval). V is the part of S "
        "held out of training; S is the S it trained on (did it fit?).</p>")


def render(config: Config, f: Facts, tiles: list[Tile], problems: list[str], workspace: str) -> str:
    target = config.target.name
    sections = [
        ("The round in numbers", numbers(config, f), "numbers"),
        ("Table 1: every model on every test set", table1(f), "table1"),
        ("Model versions and what they were trained on", versions(config, f), "versions"),
        ("Ranking stability of the test sets (SRCC)", srcc(f), "srcc"),
        ("MAD competitions (Table 2)", competitions(f), "competitions"),
        ("Selection quality against ground truth", quality(f), "quality"),
        ("Every selector on the whole corpus", selectors(f), "selectors"),
        (f"Candidates per class, M({f.round})", per_class(config, f), "classes"),
        ("Top candidates by discrepancy d", gallery(config, tiles, problems), "gallery"),
        ("Ratings and rater agreement", ratings(f), "ratings"),
        ("Fine-tuning", finetune(f), "finetune"),
        ("Repair: what each fine-tuned version fixed and broke", repair(f), "repair"),
    ]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(_section(t, b, a) for t, b, a in sections)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>madmine round {f.round}</title><style>{CSS}</style></head><body>"
        f"<header><h1>madmine · round {f.round}</h1><p>target {escape(target)} · workspace {escape(workspace)} · made {now}</p></header>"
        f"<main>{body}</main></body></html>"
    )
