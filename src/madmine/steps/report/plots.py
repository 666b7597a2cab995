"""The report's plots: matplotlib figures (no pyplot state, so reports can be made from
threads) rendered to PNG data URIs, so the page stays one file."""

from __future__ import annotations

import base64
import io
import math

from matplotlib.figure import Figure

from madmine.names import testset_name

BLUE, ORANGE, GREY = "#3465a4", "#f57900", "#888a85"


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _png(fig: Figure) -> str:
    return data_uri(png_bytes(fig), "image/png")


def _figure(width: float = 5.2, height: float = 3.0):
    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.3)
    return fig, ax


def srcc(curves) -> str:
    return _png(srcc_figure(curves))


def srcc_figure(curves) -> Figure:
    """Fig. 7: SRCC between the full test set's model ranking and the first k images' ranking."""
    fig, ax = _figure()
    for c in curves:
        ax.plot(c.ks, [None if math.isnan(v) else v for v in c.srcc], marker="o", ms=3, label=f"{testset_name(c.round)}, {len(c.models)} models")
    ax.set_xlabel("first k images of the test set")
    ax.set_ylabel("SRCC with the full ranking")
    ax.set_ylim(-1.05, 1.05)
    ax.legend(frameon=False, fontsize=8)
    return fig


def class_counts(names: list[str], counts: list[int]) -> str:
    fig, ax = _figure(5.2, 0.3 * len(names) + 0.8)
    ax.barh(names[::-1], counts[::-1], color=BLUE)
    ax.set_xlabel("candidate images (distinct) per class")
    return _png(fig)


def ratings(score_counts: dict[str, int], mos: list[float]) -> str:
    fig = Figure(figsize=(7.6, 2.8))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.3, axis="y")
    keys = list(score_counts)
    left.bar(keys, [score_counts[k] for k in keys], color=[BLUE] * (len(keys) - 1) + [ORANGE])
    left.set_title("votes (OOD: out of domain)", fontsize=10)
    right.hist(mos, bins=[1 + 0.25 * i for i in range(17)], color=BLUE)
    right.set_title("mean opinion score per image", fontsize=10)
    right.set_xlabel("MOS (1 bad .. 5 excellent)")
    return _png(fig)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def finetune(rows: list[dict]) -> str:
    """Validation mIoU and training loss per epoch, one line per trial (learning rate)."""
    fig = Figure(figsize=(7.6, 2.8))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    trials: dict[tuple, list[dict]] = {}
    for r in rows:
        trials.setdefault((r.get("trial"), r.get("lr")), []).append(r)
    for (trial, lr), points in sorted(trials.items(), key=lambda t: str(t[0])):
        points.sort(key=lambda r: r["epoch"])
        name = f"lr {lr:g}" if isinstance(lr, (int, float)) else f"trial {trial}"
        val = [(p["epoch"], p["val_miou"]) for p in points if _finite(p.get("val_miou"))]
        loss = [(p["epoch"], p["train_loss"]) for p in points if _finite(p.get("train_loss"))]
        left.plot([e for e, _ in val], [v for _, v in val], marker="o", ms=3, label=name)
        right.plot([e for e, _ in loss], [v for _, v in loss], label=name)
    left.set_title("mIoU on the held-out set", fontsize=10)
    right.set_title("training loss", fontsize=10)
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.3)
        ax.set_xlabel("epoch")
    left.legend(frameon=False, fontsize=8)
    return _png(fig)
