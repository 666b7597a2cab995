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
from dataclasses import dataclass

from madmine.config import Config, ModelSpec
from madmine.steps.train.data import DataError, Pair, TrainingData


@dataclass(frozen=True)
class Plan:
    round: int
    classes: tuple[str, ...]
    parent: dict  # the ModelSpec to start from (its weights: the parent version)
    parent_version: str
    rounds: tuple[int, ...]
    data_digest: str  # sha256 over the bytes of every image and label
    s: tuple[tuple[str, str], ...]  # (image uri, label uri)
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
    freeze_bn: bool
    val_every: int
    checkpoint_every: int
    loader_workers: int
    seed: int
    selection: str = "mad"  # the strategy whose S is trained on
    choose_by: str = "t0"  # "validation": v (a held-out part of S) chooses the lr, within max_t0_drop on T(0)
    v: tuple[tuple[str, str], ...] = ()
    max_t0_drop: float = 0.01
    tau: float = 0.5  # a validation image is a failure below this per-image mIoU ([evaluate] tau)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def parent_spec(self) -> ModelSpec:
        d = dict(self.parent)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return ModelSpec(**d)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        fields = {f.name for f in dataclasses.fields(cls)}
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
    return Plan(
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
        epochs=f.epochs,
        batch_size=f.batch_size,
        momentum=f.momentum,
        weight_decay=f.weight_decay,
        poly_power=f.poly_power,
        crop_size=f.crop_size or parent.input_size,
        scale_range=tuple(f.scale_range),
        flip=f.flip,
        mixing=f.mixing,
        freeze_bn=f.freeze_bn,
        val_every=f.val_every,
        checkpoint_every=f.checkpoint_every,
        loader_workers=f.loader_workers,
        seed=f.seed,
        selection=selection,
        choose_by=f.choose_by,
        v=v,
        max_t0_drop=f.max_t0_drop,
        tau=config.evaluate.tau,
    )


def trial_name(lr: float) -> str:
    """The Ray Train run name of one grid point: stable across re-runs, so checkpoints are found again."""
    return f"lr-{lr:g}"
