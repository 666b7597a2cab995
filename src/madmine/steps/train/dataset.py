"""Torch datasets over (image URI, label URI) pairs: read on demand, decoded safely, augmented.

Items are read from their URIs (local or s3://) when a batch needs them, so a large S(0)
never has to fit in a worker's memory; the encoded bytes of the first CACHE_BYTES read stay
in the process (S and T(0) are read every epoch, and object stores charge per request).
Training keys carry their own random seed, which makes every augmentation a function of
(seed, epoch, worker, step, slot): a resumed run sees exactly what an uninterrupted one
would have.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from madmine.images import decode, decode_map_png
from madmine.steps.train.augment import eval_input, train_example
from madmine.steps.train.plan import Plan
from madmine.workspace import read_uri

CACHE_BYTES = 256 * 2**20
_cache: dict[str, bytes] = {}
_cached_bytes = 0


def _read(uri: str, storage_options: dict) -> bytes:
    """The bytes of a URI, kept in memory while the cache has room."""
    global _cached_bytes
    data = _cache.get(uri)
    if data is None:
        data = read_uri(uri, storage_options)
        if _cached_bytes + len(data) <= CACHE_BYTES:
            _cache[uri] = data
            _cached_bytes += len(data)
    return data


def read_pair(pair: tuple[str, str], storage_options: dict):
    """(RGB PIL image as displayed, uint8 label map) of one pair."""
    image_uri, label_uri = pair
    image = decode(_read(image_uri, storage_options), min_side=1)
    label = decode_map_png(_read(label_uri, storage_options))[0]
    return image, label


class TrainSet(Dataset):
    """Keys are (index, seed tuple); returns (float32 (3, crop, crop), int64 (crop, crop))."""

    def __init__(self, pairs: tuple[tuple[str, str], ...], plan: Plan, storage_options: dict):
        self.pairs, self.plan, self.storage_options = pairs, plan, storage_options
        self.spec = plan.parent_spec()

    def __len__(self) -> int:
        return len(self.pairs)

    def paste_source(self, seed) -> tuple | None:
        """With [finetune] copy_paste: for that share of the examples, an image of S(0) (of the whole set
        when S(0) is empty) whose objects are pasted on; drawn from the example's own seed."""
        if not self.plan.copy_paste:
            return None
        rng = np.random.default_rng([*seed, 1])
        if rng.random() >= self.plan.copy_paste:
            return None
        first = len(self.plan.s) if self.plan.s0 else 0
        return read_pair(self.pairs[int(rng.integers(first, len(self.pairs)))], self.storage_options)

    def __getitem__(self, key):
        index, seed = key
        image, label = read_pair(self.pairs[index], self.storage_options)
        x, y = train_example(
            image,
            label,
            size=self.spec.input_size,
            crop=self.plan.crop_size,
            scale_range=self.plan.scale_range,
            flip=self.plan.flip,
            mean=self.spec.mean,
            std=self.spec.std,
            rng=np.random.default_rng(list(seed)),
            colours=self.plan.photometric,
            paste=self.paste_source(seed),
        )
        return torch.from_numpy(x), torch.from_numpy(y)


class EvalSet(Dataset):
    """Returns (float32 (1, 3, size, size) scoring input, uint8 label at the image's own size)."""

    def __init__(self, pairs: tuple[tuple[str, str], ...], plan: Plan, storage_options: dict):
        self.pairs, self.storage_options = pairs, storage_options
        self.spec = plan.parent_spec()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        image, label = read_pair(self.pairs[index], self.storage_options)
        x = eval_input(image, self.spec.input_size, self.spec.mean, self.spec.std)
        return torch.from_numpy(x)[None], torch.from_numpy(label.copy())
