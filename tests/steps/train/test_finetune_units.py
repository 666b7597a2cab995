"""Fine-tuning pieces without Ray: sampling, schedule, augmentation, loss, [finetune] config."""

import numpy as np
import pytest
import torch
from PIL import Image

from madmine.config import ConfigError, parse_config
from madmine.images import resize_uint8
from madmine.steps.train.augment import eval_input, train_example
from madmine.steps.train.loop import segmentation_loss
from madmine.steps.train.sampling import epoch_batches, poly_lr, steps_per_epoch

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ---- sampling ------------------------------------------------------------------------------
def test_alternate_steps_pair_a_batch_of_s_with_a_batch_of_s0_and_cover_s_every_epoch():
    n_s, n_0, b, world = 7, 20, 2, 2
    plans = [epoch_batches(n_s, n_0, b, 1, rank, world, 0, "alternate") for rank in range(world)]
    assert len(plans[0]) == len(plans[1]) == steps_per_epoch(n_s, b, world) == 2
    s_seen, s0_seen = [], []
    for plan in plans:
        for step in plan:
            s_part, s0_part = [i for i in step if i < n_s], [i for i in step if i >= n_s]
            assert 1 <= len(s_part) <= b and len(s0_part) == b
            s_seen += s_part
            s0_seen += s0_part
    assert set(s_seen) == set(range(n_s))  # one pass over S (padded by wrap-around)
    assert len(s0_seen) == len(set(s0_seen)) == 8  # 8 of the first pass over S(0): no repeat
    assert epoch_batches(n_s, n_0, b, 1, 1, world, 0, "alternate") == plans[1]  # a resumed worker replays it
    assert epoch_batches(n_s, n_0, b, 2, 1, world, 0, "alternate") != plans[1]


def test_s0_stream_continues_across_epochs_and_union_mixes_one_pool():
    first = [i for step in epoch_batches(4, 6, 2, 1, 0, 1, 0, "alternate") for i in step if i >= 4]
    second = [i for step in epoch_batches(4, 6, 2, 2, 0, 1, 0, "alternate") for i in step if i >= 4]
    # 4 + 4 items of a stream of reshuffled passes over 6: the first pass is used up before a repeat
    assert len(set(first + second[:2])) == 6
    union = epoch_batches(4, 6, 2, 1, 0, 1, 0, "union")
    assert sorted(i for step in union for i in step) == list(range(10))


def test_poly_schedule():
    assert poly_lr(0.01, 0, 100, 0.9) == pytest.approx(0.01)
    assert poly_lr(0.01, 100, 100, 0.9) == 0.0
    values = [poly_lr(0.01, i, 100, 0.9) for i in range(101)]
    assert all(a > b for a, b in zip(values[:-1], values[1:]))


# ---- augmentation: the scoring normalisation --------------------------------------------------
def _image(seed=0, h=30, w=44):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), rng.integers(0, 4, (h, w)).astype(np.uint8)


def test_eval_input_is_the_scoring_preprocessing():
    img, _ = _image()
    scored = (resize_uint8(img, 32).astype(np.float32) / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    np.testing.assert_allclose(eval_input(img, 32, MEAN, STD), scored.transpose(2, 0, 1), rtol=1e-6)


class _Fixed:
    """A stand-in random generator: scale factor 1, crop at the origin, flip as asked."""

    def __init__(self, flip: bool, scale: float = 1.0):
        self.flip, self.scale = flip, scale

    def uniform(self, low, high):
        return self.scale

    def integers(self, low, high):
        return 0

    def random(self):
        return 0.0 if self.flip else 1.0


def test_train_example_scales_crops_flips_and_pads_with_ignore():
    img, label = _image()
    kw = dict(size=32, crop=32, scale_range=(1.0, 1.0), flip=True, mean=MEAN, std=STD)
    x, y = train_example(img, label, rng=_Fixed(flip=False), **kw)
    np.testing.assert_allclose(x, eval_input(img, 32, MEAN, STD), rtol=1e-6)
    np.testing.assert_array_equal(y, np.asarray(Image.fromarray(label, "L").resize((32, 32), Image.NEAREST)))
    xf, yf = train_example(img, label, rng=_Fixed(flip=True), **kw)
    np.testing.assert_array_equal(xf, x[:, :, ::-1])
    np.testing.assert_array_equal(yf, y[:, ::-1])
    xs, ys = train_example(img, label, rng=_Fixed(flip=False, scale=0.5), **kw)
    assert xs.shape == (3, 32, 32) and ys.shape == (32, 32)
    assert (ys[16:, :] == 255).all() and (ys[:, 16:] == 255).all() and (ys[:16, :16] != 255).all()
    assert (xs[:, 16:, :] == 0).all()  # the mean colour, once normalised
    rng = np.random.default_rng(1)
    for _ in range(5):
        xr, yr = train_example(img, label, rng=rng, **{**kw, "scale_range": (0.5, 2.0)})
        assert xr.shape == (3, 32, 32) and yr.dtype == np.int64


def test_loss_ignores_255_and_is_zero_not_nan_without_labelled_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8))
    assert segmentation_loss({"out": logits}, target).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, target).item(), rel=1e-5
    )
    masked = target.clone()
    masked[0] = 255
    assert segmentation_loss({"out": logits}, masked).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[1:], target[1:]).item(), rel=1e-5
    )
    empty = segmentation_loss({"out": logits}, torch.full_like(target, 255))
    assert empty.item() == 0.0
    empty.backward()
    with_aux = segmentation_loss({"out": logits, "aux": logits}, target)
    assert with_aux.item() == pytest.approx(1.5 * torch.nn.functional.cross_entropy(logits, target).item(), rel=1e-5)


# ---- [finetune] config -----------------------------------------------------------------------
BASE = {
    "workspace": {"uri": "work/"},
    "classes": {"names": ["background", "a"]},
    "models": [
        {"name": "t", "role": "target", "factory": "madmine.models.tiny:tiny_segnet"},
        {"name": "c", "role": "competitor", "factory": "madmine.models.tiny:tiny_dilated"},
    ],
}


def _parse(tmp_path, **finetune):
    return parse_config({**BASE, "finetune": finetune}, tmp_path)


def test_finetune_defaults_are_the_papers_and_folders_resolve_relative_to_the_config(tmp_path):
    f = parse_config(BASE, tmp_path).finetune
    assert (f.lr_grid, f.epochs, f.batch_size, f.momentum, f.weight_decay, f.poly_power) == (
        (1e-5, 5e-5, 1e-4),
        80,
        2,
        0.9,
        5e-4,
        0.9,
    )
    assert f.mixing == "alternate" and f.checkpoint_every == 1 and not f.use_gpu
    f = _parse(tmp_path, s0_images="data/img/", t0_labels="s3://bucket/t0/", lr_grid=[1, 2e-3]).finetune
    assert f.s0_images == str(tmp_path / "data" / "img") + "/" and f.t0_labels == "s3://bucket/t0/"
    assert f.lr_grid == (1.0, 2e-3)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"lr_grid": []}, "lr_grid must list learning rates > 0"),
        ({"lr_grid": [1e-5, -1]}, "lr_grid[1] must be > 0"),
        ({"lr_grid": [1e-5, 1e-5]}, "repeats"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"batch_size": 1.5}, "batch_size must be a whole number"),
        ({"momentum": 1.0}, "momentum must be < 1"),
        ({"scale_range": [2.0, 0.5]}, "scale_range must be two numbers"),
        ({"mixing": "interleave"}, "mixing must be 'alternate'"),
        ({"start_from": "best"}, "start_from must be 'latest' or 'original'"),
        ({"use_gpu": "yes"}, "use_gpu must be true or false"),
        ({"crop_size": 4}, "crop_size must be 0"),
        ({"s0_images": 3}, "s0_images must be a non-empty string"),
        ({"epoch": 3}, "did you mean 'epochs'"),
    ],
)
def test_bad_finetune_values_are_refused_with_the_key(tmp_path, values, message):
    with pytest.raises(ConfigError, match="finetune") as info:
        _parse(tmp_path, **values)
    assert message in str(info.value)
