"""The demo's sizes and schedules, and the madmine.toml it writes.

`FULL` is `make demo`: a corpus of 5,000 images like the web's (mostly typical scenes, a
minority of corner cases), two rounds, the paper's n3 = 25 and n4 = 100. `QUICK` runs every
step on a small corpus for one round (the end-to-end test).
Fine-tuning keeps the paper's recipe (SGD, momentum 0.9, weight decay 5e-4, poly decay,
one batch of S and one of S(0) per step, lr chosen on T(0)) with fewer epochs and a
learning-rate grid that suits small networks trained from scratch rather than a pretrained
DeepLab: this 2-core CPU has minutes, not GPU-days.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from madmine_demo.world import shapes
from madmine_demo.zoo.training import ZooModel

INPUT_SIZE = 64


@dataclass(frozen=True)
class Settings:
    corpus: int = 5000  # wild images madmine troubleshoots
    train: int = 1000  # the training domain's labelled set S(0)
    t0: int = 200  # held-out training-domain set T(0)
    heldout: int = 500  # held-out wild set (Table 2), never in the corpus
    rounds: int = 2
    seed: int = 0
    steps: tuple[int, int, int, int] = (300, 300, 300, 300)  # training steps: target, unet, fcn, mobile
    n3: int = 25
    n4: int = 100
    testset_size: int = 30
    per_class: int = 5
    compete_n: int = 30
    epochs: int = 15
    lr_grid: tuple[float, ...] = (0.003, 0.01)
    batch_size: int = 8
    shard_size: int = 500
    world: str = "web"  # the corpus's mix of kinds (madmine_demo.world.failures.MIXES)
    probe_per_kind: int = 50  # probe scenes of each kind: failure rates per kind, before and after fine-tuning
    choose_by: str = "validation"  # [finetune] choose_by: "t0" is the paper's protocol (docs/finetune.md)
    max_t0_drop: float = 0.01
    seeds: int = 1  # training seeds of each compared fine-tuning (> 1: the spread between training runs)

    def with_corpus(self, images: int | None) -> Settings:
        return self if images is None else replace(self, corpus=images)


FULL = Settings()
QUICK = Settings(corpus=240, train=120, t0=30, heldout=60, rounds=1, steps=(20, 20, 20, 20), n3=3, n4=12,
                 testset_size=8, per_class=3, compete_n=8, epochs=1, lr_grid=(0.01,), batch_size=4, shard_size=120,
                 world="wild", probe_per_kind=6)  # 240 images: the corner-case-rich mix gives every step something to pick


def zoo(settings: Settings) -> list[ZooModel]:
    """The target first, then the competitors; seeds differ so no two share an initialisation."""
    designs = [("target", "target", "deeplab"), ("unet", "competitor", "unet"), ("fcn", "competitor", "fcn"),
               ("mobile", "competitor", "mobile")]
    return [
        ZooModel(name, role, f"madmine_demo.zoo.nets:{design}", steps, settings.seed + k, INPUT_SIZE)
        for k, ((name, role, design), steps) in enumerate(zip(designs, settings.steps))
    ]


def _toml(value) -> str:
    return json.dumps(value)


def config_text(settings: Settings, workspace: str, weights: dict[str, str], world: Path, models: list[ZooModel],
                extra_models: dict[str, str] | None = None, t0: tuple[str, str] | None = None) -> str:
    """madmine.toml of the demo: paths relative to the config file.

    `extra_models` (name -> weights file) adds fine-tuned target variants as further
    entries of the target's design (the arena compares them); `t0` replaces the held-out
    set (images, labels) that evaluation reports as T(0)."""
    lines = [
        "[workspace]", f"uri = {_toml(workspace)}", "",
        "[classes]", f"names = {_toml(list(shapes.NAMES))}",
        "colors = " + _toml(["#%02x%02x%02x" % c for c in shapes.COLORS]), "",
    ]
    entries = [(m.name, m.role, m.factory, weights[m.name]) for m in models]
    target = models[0]
    for name, path in (extra_models or {}).items():
        entries.append((name, "competitor", target.factory, path))
    for name, role, factory, path in entries:
        lines += ["[[models]]", f"name = {_toml(name)}", f"role = {_toml(role)}", f"factory = {_toml(factory)}",
                  f"weights = {_toml(path)}", f"input_size = {INPUT_SIZE}", ""]
    t0_images, t0_labels = t0 or (f"{world}/t0/images/", f"{world}/t0/labels/")
    lines += [
        "[scoring]", "batch_size = 32", f"shard_size = {settings.shard_size}", "",
        "[selection]", f"n3 = {settings.n3}", f"n4 = {settings.n4}", f"seed = {settings.seed}", "",
        "[rating]", "min_raters = 3", "",
        "[evaluate]", f"testset_size = {settings.testset_size}", f"per_class = {settings.per_class}",
        f"compete_n = {settings.compete_n}", f"seed = {settings.seed}", "",
        "[finetune]",
        f"s0_images = {_toml(f'{world}/train/images/')}", f"s0_labels = {_toml(f'{world}/train/labels/')}",
        f"t0_images = {_toml(t0_images)}", f"t0_labels = {_toml(t0_labels)}",
        f"lr_grid = {_toml(list(settings.lr_grid))}", f"epochs = {settings.epochs}", f"batch_size = {settings.batch_size}",
        f"val_every = {settings.epochs}", f"checkpoint_every = {settings.epochs}",
        f"concurrent_trials = {len(settings.lr_grid)}", "loader_workers = 0", f"seed = {settings.seed}",
        f"choose_by = {_toml(settings.choose_by)}", f"max_t0_drop = {settings.max_t0_drop}", "",
    ]
    return "\n".join(lines)
