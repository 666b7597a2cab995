"""A small world for fine-tuning tests (helpers only; the tests live in test_finetune*.py).

Two distributions of the same task (rectangles of red, green or blue; class = colour):
- "s0": dark backgrounds, saturated colours: what the target was trained on (S(0), T(0));
- "shift": bright grey backgrounds, muted colours: where the target fails (S, held-out shift set).
The target is a tiny network trained on "s0" here, in seconds, so fine-tuning starts from a
model that is good on S(0)-like data and bad on the shifted data.
"""

from __future__ import annotations

import functools
import io
import json
import posixpath
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

import configs
from configs import DILATED, SEGNET, model, models
from madmine import tables
from madmine.config import load_config
from madmine.images import encode_map_png
from madmine.metrics import confusion, dataset_miou
from madmine.models.registry import build_network, forward_logits
from madmine.models.tiny import TinySegNet
from madmine.steps.annotation.labels import label_path
from madmine.steps.ingest import image_id_of
from madmine.steps.train.augment import eval_input
from madmine.workspace import Workspace, filesystem, split_uri

CLASSES = ["background", "red", "green", "blue"]
SIZE = 32  # the models' input_size
H, W = 40, 48


def scene(rng: np.random.Generator, style: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB image, uint8 label) of one generated scene."""
    if style == "s0":
        img = rng.integers(0, 40, size=(H, W, 3)).astype(np.uint8)
        strong, weak = (200, 256), (0, 60)
    else:
        img = (rng.integers(165, 215) + rng.integers(-12, 12, size=(H, W, 1))).repeat(3, axis=2).astype(np.uint8)
        strong, weak = (120, 170), (40, 90)
    label = np.zeros((H, W), np.uint8)
    for _ in range(rng.integers(1, 4)):
        k = int(rng.integers(1, 4))
        y0, x0 = int(rng.integers(0, H - 10)), int(rng.integers(0, W - 10))
        y1, x1 = y0 + int(rng.integers(8, H // 2 + 8)), x0 + int(rng.integers(8, W // 2 + 8))
        colour = rng.integers(*weak, size=3)
        colour[k - 1] = rng.integers(*strong)
        img[y0:y1, x0:x1] = colour
        label[y0:y1, x0:x1] = k
    return img, label


def scenes(n: int, style: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng([seed, 0 if style == "s0" else 1])
    return [scene(rng, style) for _ in range(n)]


def write_pairs(root: Path, pairs, prefix: str) -> tuple[Path, Path]:
    """images/<prefix>NNN.png + labels/<prefix>NNN.png under root."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(pairs):
        Image.fromarray(img).save(root / "images" / f"{prefix}{i:03d}.png")
        Image.fromarray(label, "L").save(root / "labels" / f"{prefix}{i:03d}.png")
    return root / "images", root / "labels"


def _inputs(pairs) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = np.stack([eval_input(Image.fromarray(img), SIZE, mean, std) for img, _ in pairs])
    y = np.stack([np.asarray(Image.fromarray(lab, "L").resize((SIZE, SIZE), Image.NEAREST)) for _, lab in pairs])
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


@functools.lru_cache(maxsize=2)
def pretrained(seed: int = 0, steps: int = 200) -> dict:
    """A tiny_segnet state_dict trained on 48 "s0" scenes (cached: every test starts from the same target)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: far faster than two contending ones on a small busy machine
    try:
        return pretrain(scenes(48, "s0", seed + 100), steps, seed)
    finally:
        torch.set_num_threads(threads)


def pretrain(pairs, steps: int, seed: int = 0) -> dict:
    """A tiny_segnet state_dict trained on `pairs` with the scoring preprocessing."""
    torch.manual_seed(seed)
    net = TinySegNet(len(CLASSES), width=8)
    x, y = _inputs(pairs)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    net.train()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (8,), generator=gen)
        loss = torch.nn.functional.cross_entropy(net(x[idx])["out"], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def measure(spec, pairs, storage_options=None) -> float:
    """Dataset mIoU of a model entry on (image, label) arrays, predicted the scoring way."""
    net = build_network(spec, len(CLASSES), storage_options)
    conf = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a one-CPU Ray worker computes: the same sums in the same order
    with torch.inference_mode():
        for img, label in pairs:
            x = torch.from_numpy(eval_input(Image.fromarray(img), spec.input_size, spec.mean, spec.std))[None]
            logits = torch.nn.functional.interpolate(forward_logits(net, x), size=label.shape, mode="bilinear")
            conf += confusion(label, logits.argmax(1)[0].numpy(), len(CLASSES))
    torch.set_num_threads(threads)
    return dataset_miou(conf)


class SlowTiny(TinySegNet):
    """tiny_segnet that sleeps half a second per training step: long enough runs to interrupt."""

    def forward(self, x):
        if self.training:
            time.sleep(0.5)
        return super().forward(x)


def slow_tiny_segnet(num_classes: int):
    return SlowTiny(num_classes, width=8)


def add_round(ws: Workspace, round_: int, pairs, image_dir: Path | str, storage_options=None) -> list[str]:
    """Make `pairs` the labelled S of a round: image files, tables/selected, label PNGs, labels table."""
    fs = filesystem(str(image_dir), storage_options)
    rows, labels = [], []
    now = datetime.now(UTC)
    for i, (img, label) in enumerate(pairs):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG")
        data = buf.getvalue()
        uri = f"{str(image_dir).rstrip('/')}/r{round_}_{i:03d}.png"
        path = split_uri(uri)[1]
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        fs.pipe_file(path, data)
        image_id = image_id_of(data)
        rows.append({"round": round_, "image_id": image_id, "uri": uri, "mos": 1.5, "n_ratings": 2, "rank": i + 1})
        ws.put_bytes(label_path(ws, image_id), encode_map_png(label))
        mask_uri = ws.url(label_path(ws, image_id))
        labels.append(
            {"image_id": image_id, "mask_uri": mask_uri, "source": "test", "round": round_, "created_at": now}
        )
    ws.write_parquet(tables.SELECTED.path(ws, round=round_, strategy=tables.MAD), pa.Table.from_pylist(rows, schema=tables.SELECTED.schema))
    ws.write_parquet(tables.LABELS.path(ws, part=f"test-{round_}"), pa.Table.from_pylist(labels, schema=tables.LABELS.schema))
    return [r["image_id"] for r in rows]


def write_config(
    root: Path,
    *,
    workspace: str,
    factory: str = SEGNET,
    weights: str = "target.pt",
    finetune: str = "",
    storage: str = "",
    folders: str = "",
    target: str | None = None,
) -> Path:
    """The config of a fine-tuning world; `target` (TOML lines) replaces the target's factory and weights."""
    kind = target or f'factory = "{factory}"\nweights = "{weights}"'
    entries = models(model("target", "target", kind, input_size=SIZE),
                     model("other", "competitor", factory=DILATED, input_size=SIZE))
    folders = textwrap.dedent(folders) or textwrap.dedent("""
        s0_images = "s0/images/"
        s0_labels = "s0/labels/"
        t0_images = "t0/images/"
        t0_labels = "t0/labels/"
        """)
    return configs.write_config(root, entries, workspace=workspace,
                                extra=textwrap.dedent(storage) + "\n[finetune]\n" + folders + textwrap.dedent(finetune))


def world(
    root: Path,
    *,
    n_s: int = 8,
    n_s0: int = 8,
    n_t0: int = 6,
    finetune: str = "",
    factory: str | None = None,
    round_: int = 0,
    seed: int = 0,
):
    """A local workspace ready for `finetune --round round_`: target weights, S(0), T(0), a labelled S."""
    torch.save(pretrained(seed), root / "target.pt")
    write_pairs(root / "s0", scenes(n_s0, "s0", seed + 1), "a")
    write_pairs(root / "t0", scenes(n_t0, "s0", seed + 2), "t")
    kwargs = {"factory": factory} if factory else {}
    cfg = load_config(write_config(root, workspace="work/", finetune=finetune, **kwargs))
    add_round(Workspace.from_config(cfg), round_, scenes(n_s, "shift", seed + 3), root / "corpus")
    return cfg


def registered_epoch(snapshot: bytes) -> int:
    """The newest epoch whose checkpoint Ray Train has registered (0: none yet).

    Ray Train learns of a report when its controller next polls the workers (every 2 s): a
    checkpoint written but not yet registered would be lost with its worker, so the tests
    interrupt only after a registration.
    """
    latest = json.loads(snapshot).get("latest_checkpoint_result") or {}
    return int(latest.get("checkpoint_dir_name", "epoch-0000").split("-")[1])
