"""Everything one fine-tuning round needs, as plain data that travels to the Ray workers.

The plan is written to the workspace (finetune/round-<R>-<strategy>/plan.json) before training starts.
Its fingerprint covers the data, the parent weights and the schedule: a re-run of the same
round continues from the checkpoints only when nothing of that changed. It holds no
credentials (storage options travel separately, in memory).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

from madmine.config import Config, ModelSpec
from madmine.steps.context import from_section
from madmine.steps.train.data import DataError, Pair, TrainingData
from madmine.steps.train.recipe import summed_lr, trains_batch_norm
from madmine.steps.train.sampling import epoch_steps, split_batch


@dataclass(frozen=True)
class Plan:
    round: int
    classes: tuple[str, ...]
    parent: dict  # the ModelSpec to start from (its weights: the parent version)
    parent_version: str
    rounds: tuple[int, ...]
    data_digest: str  # sha256 over the bytes of every image and label
    s: tuple[tuple[str, str], ...]  # (image uri, label uri): the S it trains on
    s0: tuple[tuple[str, str], ...]
    t0: tuple[tuple[str, str], ...]
    lr_grid: tuple[float, ...]
    epochs: int
    batch_size: int
    momentum: float
    weight_decay: float
    poly_power: float
    crop_size: int
    scale_range: tuple[float, float]
    flip: bool
    mixing: str
    batch_norm: str  # "auto", "train" or "freeze"
    val_every: int
    checkpoint_every: int
    loader_workers: int
    seed: int
    selection: str = "mad"  # the strategy whose S is trained on
    choose_by: str = "t0"  # "validation": v (a held-out part of S) chooses the checkpoint, within max_t0_drop on T(0)
    v: tuple[tuple[str, str], ...] = ()
    max_t0_drop: float = 0.01
    tau: float = 0.5  # an image is a failure below this per-image mIoU ([evaluate] tau)
    optimizer: str = "sgd"
    schedule: str = "poly"
    steps: int = 0  # > 0: the step budget (else epochs passes)
    s_share: float = 0.5  # alternate: the share of each batch drawn from S
    photometric: bool = False
    copy_paste: float = 0.0
    fit_guard: float = 0.5
    workers: int = 1  # Ray Train workers (data parallel): a step takes batch_size images on each

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def parent_spec(self) -> ModelSpec:
        d = dict(self.parent)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return ModelSpec(**d)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    # ---- the schedule, in steps ---------------------------------------------------------------
    @property
    def epoch_steps(self) -> int:
        """Steps of one epoch on each worker (a pass over the mixing's pool)."""
        return max(1, epoch_steps(len(self.s), len(self.s0), self.batch_size, self.workers, self.mixing, self.s_share))

    @property
    def total_steps(self) -> int:
        """Every step of a trial: the budget, or epochs x the steps of an epoch."""
        return self.steps if self.steps > 0 else self.epochs * self.epoch_steps

    @property
    def last_epoch(self) -> int:
        """The number of (possibly partial) epochs a trial runs; the last one is cut at the budget."""
        return math.ceil(self.total_steps / self.epoch_steps)

    def steps_in(self, epoch: int) -> int:
        return min(self.epoch_steps, self.total_steps - (epoch - 1) * self.epoch_steps)

    @property
    def train_batch_norm(self) -> bool:
        return trains_batch_norm(self.batch_norm, self.batch_size)

    def passes(self) -> tuple[float, float]:
        """(passes over S, passes over S(0)) in a whole trial, over every worker: an epoch is one pass over
        its pool (union: S and S(0); alternate: S, with S(0) streamed alongside)."""
        epochs = self.total_steps / self.epoch_steps
        n_0 = len(self.s0)
        if self.mixing == "union":
            return epochs, (epochs if n_0 else 0.0)
        from_0 = split_batch(self.batch_size, self.s_share, n_0)[1]
        return epochs, self.total_steps * self.workers * from_0 / max(n_0, 1)

    def augmentations(self) -> str:
        parts = []
        if self.flip:
            parts.append("flips")
        if tuple(self.scale_range) != (1.0, 1.0):
            parts.append(f"rescaling {self.scale_range[0]:g}-{self.scale_range[1]:g}x")
        if self.photometric:
            parts.append("photometric (channels permuted, greyscale)")
        if self.copy_paste:
            parts.append(f"copy-paste of S(0) objects onto {100 * self.copy_paste:.0f}% of images")
        return ", ".join(parts) or "none"

    def describe(self) -> str:
        """What a trial will do, in the units that decide whether it can fit S: printed before training."""
        over_s, over_0 = self.passes()
        n_s, n_0 = len(self.s), len(self.s0)
        if self.mixing == "union":
            batch = f"{self.batch_size} images from S and S(0) shuffled together"
        else:
            from_s, from_0 = split_batch(self.batch_size, self.s_share, n_0)
            batch = f"{from_s} of S + {from_0} of S(0)"
        workers = f" on each of {self.workers} workers" if self.workers > 1 else ""
        rates = ", ".join(f"{lr:g} (summed over the steps: {summed_lr(self.schedule, lr, self.total_steps, self.poly_power):.3g})"
                          for lr in sorted(self.lr_grid))
        bn = "trained" if self.train_batch_norm else "frozen (the parent's statistics)"
        bn += f" ({self.batch_norm}, {self.batch_size} images per worker)" if self.batch_norm == "auto" else ""
        bound = 100 * self.max_t0_drop
        choice = ("T(0) mIoU (the paper's)" if self.choose_by == "t0" else
                  f"the fewest failures on V ({len(self.v)} images held out of S: one image moves its failure rate "
                  f"{100 / max(len(self.v), 1):.1f} points), within {bound:g} point{'' if bound == 1 else 's'} of the parent's "
                  "T(0) mIoU")
        return (
            f"{self.total_steps} steps of {batch}{workers}: {over_s:.1f} passes over S ({n_s} images), "
            f"{over_0:.1f} over S(0) ({n_0}); {self.optimizer}, {self.schedule} schedule, lr {rates}; "
            f"batch norm {bn}; augment: {self.augmentations()}; "
            f"every {self.val_every * self.epoch_steps} steps the checkpoint is measured on T(0) ({len(self.t0)} images)"
            + (f", V ({len(self.v)})" if self.v else "") + f" and on S; the best by {choice} is kept"
        )

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        fields = {f.name for f in dataclasses.fields(cls)}
        if "freeze_bn" in d and "batch_norm" not in d:  # a plan written before batch_norm was a setting
            d = {**d, "batch_norm": "freeze" if d["freeze_bn"] else "train"}
        d = {k: v for k, v in d.items() if k in fields}
        for key in ("s", "s0", "t0", "v"):
            if key in d:
                d[key] = tuple(tuple(p) for p in d[key])
        for key in ("classes", "rounds", "lr_grid", "scale_range"):
            d[key] = tuple(d[key])
        return cls(**d)

    def fingerprint(self) -> str:
        """What decides the result; loader_workers and the order of the lr grid do not."""
        d = self.to_dict()
        d.pop("loader_workers")
        d["lr_grid"] = sorted(d["lr_grid"])
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _pairs(pairs: tuple[Pair, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((p.image, p.label) for p in pairs)


def _draw(image_uri: str, seed: int) -> float:
    """A number in [0, 1) fixed by the image's file name and the seed."""
    digest = hashlib.sha256(f"{seed}:{image_uri.rsplit('/', 1)[-1]}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out(image_uri: str, share: float, seed: int) -> bool:
    """Whether an image of S is kept out of training to validate on: fixed by its name and the
    seed, so an image stays on its side in every round and on every machine."""
    return _draw(image_uri, seed) < share


def split_validation(s: tuple[tuple[str, str], ...], share: float, seed: int) -> tuple[tuple, tuple]:
    """(training part, validation part V) of S. V holds about `share` of S, and at least one
    image when S has two (the one drawing the smallest number)."""
    v = tuple(p for p in s if held_out(p[0], share, seed))
    if not v and len(s) >= 2:
        v = (min(s, key=lambda p: _draw(p[0], seed)),)
    return tuple(p for p in s if p not in v), v


def make_plan(
    config: Config, round_: int, parent: ModelSpec, parent_version: str, data: TrainingData, data_digest: str,
    selection: str = "mad",
) -> Plan:
    f = config.finetune
    s, v = _pairs(data.s), ()
    if f.choose_by == "validation":
        s, v = split_validation(s, f.validation_share, f.seed)
        if not v:
            raise DataError(
                f"round {round_}: S has {len(data.s)} labelled image, too few to keep one for validation and train on "
                "the rest; label more, or set [finetune] choose_by = \"t0\""
            )
    # every recipe setting is a [finetune] key of the same name; the rest is this round's
    return from_section(
        Plan,
        f,
        round=round_,
        classes=tuple(config.classes),
        parent=dataclasses.asdict(parent),
        parent_version=parent_version,
        rounds=data.rounds,
        data_digest=data_digest,
        s=s,
        s0=_pairs(data.s0),
        t0=_pairs(data.t0),
        lr_grid=tuple(f.lr_grid),
        crop_size=f.crop_size or parent.input_size,
        scale_range=tuple(f.scale_range),
        selection=selection,
        v=v,
        tau=config.evaluate.tau,
        workers=f.num_workers,
    )


def trial_name(lr: float) -> str:
    """The Ray Train run name of one grid point: stable across re-runs, so checkpoints are found again."""
    return f"lr-{lr:g}"
