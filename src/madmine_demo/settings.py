"""The demo's sizes and schedules, and the madmine.toml it writes.

`FULL` is `make demo`: a corpus of 5,000 images like the web's (mostly typical scenes, a
minority of corner cases), two rounds, the paper's n3 = 25 and n4 = 100. `QUICK` runs every
step on a small corpus for one round (the end-to-end test).
Fine-tuning uses the recipe the target was trained with (AdamW, one-cycle, batch norm trained,
flips only) plus copy-paste of S(0) objects onto half the images, each batch half S and half
S(0), for as many steps as the target's own training: the recipe bench.finetune_repair measured
against the paper's (docs/demo.md, "Does
fine-tuning repair what it was shown?"); `[finetune]` keys, so any of it can be changed.
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
    lr_grid: tuple[float, ...] = (1e-3,)
    batch_size: int = 16  # per step: 8 of S and 8 of S(0)
    finetune_steps: int = 300  # as many as the target's own training
    val_every: int = 5  # epochs (passes over S) between the checkpoints that compete
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    batch_norm: str = "train"
    weight_decay: float = 1e-4  # the target's own
    scale_range: tuple[float, float] = (1.0, 1.0)  # the target never saw rescaling
    photometric: bool = False
    copy_paste: float = 0.5  # half the training images get the objects of an S(0) image pasted on (E4)
    shard_size: int = 500
    world: str = "web"  # the corpus's mix of kinds (madmine_demo.world.failures.MIXES)
    probe_per_kind: int = 100  # probe scenes of each kind: failure rates and repair per kind, before and after fine-tuning
    choose_by: str = "validation"  # [finetune] choose_by: "t0" is the paper's protocol (docs/finetune.md)
    max_t0_drop: float = 0.01
    seeds: int = 1  # training seeds of each compared fine-tuning (> 1: the spread between training runs)

    def with_corpus(self, images: int | None) -> Settings:
        return self if images is None else replace(self, corpus=images)


FULL = Settings()
QUICK = Settings(corpus=240, train=120, t0=30, heldout=60, rounds=1, steps=(20, 20, 20, 20), n3=3, n4=12,
                 testset_size=8, per_class=3, compete_n=8, finetune_steps=6, val_every=1, batch_size=4, shard_size=120,
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
        f"lr_grid = {_toml(list(settings.lr_grid))}", f"optimizer = {_toml(settings.optimizer)}",
        f"schedule = {_toml(settings.schedule)}", f"batch_norm = {_toml(settings.batch_norm)}",
        f"weight_decay = {settings.weight_decay}", 'mixing = "alternate"', "s_share = 0.5",
        f"steps = {settings.finetune_steps}", f"batch_size = {settings.batch_size}",
        f"scale_range = {_toml(list(settings.scale_range))}", "flip = true",
        f"photometric = {_toml(settings.photometric).lower()}", f"copy_paste = {settings.copy_paste}",
        f"val_every = {settings.val_every}", f"checkpoint_every = {settings.val_every}",
        f"concurrent_trials = {len(settings.lr_grid)}", "loader_workers = 0", f"seed = {settings.seed}",
        f"choose_by = {_toml(settings.choose_by)}", f"max_t0_drop = {settings.max_t0_drop}", "",
    ]
    return "\n".join(lines)
