"""Fine-tuning pieces without Ray: sampling, schedule, augmentation, loss, [finetune] config."""

import numpy as np
import pytest
import torch
from PIL import Image

from madmine.config import ConfigError, parse_config
from madmine.images import resize_uint8
from madmine.steps.train.augment import eval_input, train_example
from madmine.steps.train.loop import segmentation_loss
from madmine.steps.train.recipe import poly_lr
from madmine.steps.train.sampling import epoch_batches, steps_per_epoch

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ---- sampling ------------------------------------------------------------------------------
def test_alternate_steps_pair_a_batch_of_s_with_a_batch_of_s0_and_cover_s_every_epoch():
    n_s, n_0, b, world = 7, 20, 2, 2  # batches of 4: half of S (s_share 0.5), half of S(0)
    plans = [epoch_batches(n_s, n_0, 2 * b, 1, rank, world, 0, "alternate") for rank in range(world)]
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
    assert epoch_batches(n_s, n_0, 2 * b, 1, 1, world, 0, "alternate") == plans[1]  # a resumed worker replays it
    assert epoch_batches(n_s, n_0, 2 * b, 2, 1, world, 0, "alternate") != plans[1]


def test_s0_stream_continues_across_epochs_and_union_mixes_one_pool():
    first = [i for step in epoch_batches(4, 6, 4, 1, 0, 1, 0, "alternate") for i in step if i >= 4]
    second = [i for step in epoch_batches(4, 6, 4, 2, 0, 1, 0, "alternate") for i in step if i >= 4]
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
    assert f.mixing == "union" and f.checkpoint_every == 1 and not f.use_gpu  # one pool of S and S(0): the paper's
    assert f.choose_by == "t0"  # the paper's choice of the lr unless asked otherwise
    assert (f.optimizer, f.schedule, f.batch_norm, f.steps) == ("sgd", "poly", "auto", 0)
    assert (f.flip, f.scale_range, f.photometric, f.copy_paste) == (True, (0.5, 2.0), False, 0.0)
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
        ({"mixing": "interleave"}, "mixing must be 'union' or 'alternate'"),
        ({"optimizer": "adam"}, "optimizer must be 'sgd' or 'adamw'"),
        ({"schedule": "step"}, "schedule must be 'poly', 'constant', 'cosine' or 'onecycle'"),
        ({"batch_norm": True}, "batch_norm must be 'auto', 'train' or 'freeze'"),
        ({"freeze_bn": True}, "unknown key 'freeze_bn': it is now batch_norm"),
        ({"steps": -1}, "steps must be >= 0"),
        ({"s_share": 0}, "s_share must be > 0"),
        ({"copy_paste": 1.5}, "copy_paste must be <= 1"),
        ({"photometric": 1}, "photometric must be true or false"),
        ({"fit_guard": 0}, "fit_guard must be > 0"),
        ({"start_from": "best"}, "start_from must be 'latest' or 'original'"),
        ({"use_gpu": "yes"}, "use_gpu must be true or false"),
        ({"crop_size": 4}, "crop_size must be 0"),
        ({"s0_images": 3}, "s0_images must be a non-empty string"),
        ({"epoch": 3}, "did you mean 'epochs'"),
        ({"choose_by": "v"}, "choose_by must be 't0' or 'validation'"),
        ({"validation_share": 0.6}, "validation_share must be <= 0.5"),
        ({"validation_share": 0}, "validation_share must be > 0"),
        ({"max_t0_drop": -0.1}, "max_t0_drop must be >= 0"),
    ],
)
def test_bad_finetune_values_are_refused_with_the_key(tmp_path, values, message):
    with pytest.raises(ConfigError, match="finetune") as info:
        _parse(tmp_path, **values)
    assert message in str(info.value)


# ---- choosing the learning rate ---------------------------------------------------------------
def _outcome(lr, t0_before, t0_after, v_before=None, v_after=None, v_miou=None):
    from madmine.steps.train.curves import Outcome

    first = {"epoch": 0, "val_miou": t0_before, **({"v_failures": v_before} if v_before is not None else {})}
    last = {"epoch": 5, "val_miou": t0_after,
            **({"v_failures": v_after, "v_image_miou": v_miou} if v_after is not None else {})}
    return Outcome(lr, f"lr-{lr:g}", t0_after, f"ckpt-{lr:g}", (first, last))


def _plan(**fields):
    import dataclasses

    from madmine.steps.train.plan import Plan

    base = {f.name: None for f in dataclasses.fields(Plan) if f.default is dataclasses.MISSING}
    return Plan(**{**base, **fields})


def test_t0_picks_the_highest_t0_and_validation_the_fewest_v_failures_within_the_t0_bound():
    from madmine.steps.train.versions import pick_winner

    gentle = _outcome(0.001, 0.80, 0.805, 0.9, 0.85, 0.40)  # changes least: T(0) even rises
    fixer = _outcome(0.01, 0.80, 0.795, 0.9, 0.30, 0.62)  # fixes V, T(0) within 0.01
    wrecker = _outcome(0.1, 0.80, 0.70, 0.9, 0.10, 0.70)  # fixes V best, loses 0.10 on T(0)
    outcomes = [gentle, fixer, wrecker]
    assert pick_winner(outcomes).lr == 0.001
    assert pick_winner(outcomes, _plan(choose_by="t0")).lr == 0.001
    assert pick_winner(outcomes, _plan(choose_by="validation", max_t0_drop=0.01)).lr == 0.01
    assert pick_winner(outcomes, _plan(choose_by="validation", max_t0_drop=0.2)).lr == 0.1
    # ties on V failures: the higher mean per-image mIoU on V, then the smaller lr
    twin = _outcome(0.003, 0.80, 0.80, 0.9, 0.30, 0.70)
    assert pick_winner([fixer, twin], _plan(choose_by="validation", max_t0_drop=0.01)).lr == 0.003
    same = _outcome(0.02, 0.80, 0.80, 0.9, 0.30, 0.62)
    assert pick_winner([same, fixer], _plan(choose_by="validation", max_t0_drop=0.01)).lr == 0.01
    # nothing keeps T(0) within the bound: the paper's choice
    assert pick_winner([wrecker, _outcome(0.3, 0.80, 0.6, 0.9, 0.0, 0.9)],
                       _plan(choose_by="validation", max_t0_drop=0.01)).lr == 0.1


def test_the_held_out_part_of_s_is_fixed_by_name_and_seed_and_near_its_share():
    from madmine.steps.train.plan import held_out

    names = [f"s3://bucket/round-0/img_{i:05d}.png" for i in range(4000)]
    picked = [held_out(n, 0.2, 0) for n in names]
    assert abs(sum(picked) / len(names) - 0.2) < 4 * (0.2 * 0.8 / len(names)) ** 0.5
    assert picked == [held_out(n.replace("s3://bucket/round-0/", "/local/copy/"), 0.2, 0) for n in names]
    assert picked != [held_out(n, 0.2, 1) for n in names]
    assert all(held_out(n, 0.3, 0) for n, p in zip(names, picked) if p)  # a larger share keeps the smaller one's images


def test_validation_counts_failures_on_v_like_an_independent_per_image_miou(tmp_path):
    """loop.checkpoint_measures on V, for a network with fixed outputs, against numpy's per-image mIoU."""
    from torch import nn

    from madmine.steps.train.loop import checkpoint_measures

    rng = np.random.default_rng(2)
    pairs, truth = [], []

    class Fixed(nn.Module):  # predicts class 1 on the left half, 0 on the right, whatever it sees
        def forward(self, x):
            out = torch.zeros(x.shape[0], 3, x.shape[2], x.shape[3])
            out[:, 1, :, : x.shape[3] // 2] = 1.0
            out[:, 0, :, x.shape[3] // 2 :] = 1.0
            return out

    for i in range(7):
        label = np.zeros((16, 16), np.uint8)
        label[:, : (2, 5, 8, 9, 12, 14, 7)[i]] = 1
        label[rng.integers(0, 12) :][:, rng.integers(0, 12) :][:3, :3] = 2
        if i == 3:
            label[:4] = 255
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / f"i{i}.png")
        Image.fromarray(label).save(tmp_path / f"l{i}.png")
        pairs.append((str(tmp_path / f"i{i}.png"), str(tmp_path / f"l{i}.png")))
        pred = np.zeros((16, 16), np.int64)
        pred[:, :8] = 1
        valid = label != 255
        ious = []
        for k in range(3):
            union = ((label == k) | (pred == k)) & valid
            if union.sum():
                ious.append((((label == k) & (pred == k)) & valid).sum() / union.sum())
        truth.append(np.mean(ious))
    plan = _plan(classes=("a", "b", "c"), v=tuple(pairs), t0=(), s=(), tau=0.5, loader_workers=0,
                 parent={"name": "t", "role": "target", "arch": "fcn_resnet50", "input_size": 16, "mean": (0.5,) * 3,
                         "std": (0.5,) * 3})
    out, images = checkpoint_measures(Fixed(), plan, {}, "cpu", 0, 1)
    truth = np.asarray(truth)
    np.testing.assert_allclose(images["v"], truth)
    assert out["v_failures"] == pytest.approx(np.mean(truth < 0.5))
    assert out["v_image_miou"] == pytest.approx(truth.mean())
    assert 0 < out["v_failures"] < 1


def test_a_small_s_still_keeps_one_image_for_validation_and_a_single_image_none():
    from madmine.steps.train.plan import held_out, split_validation

    pairs = tuple((f"img_{i}.jpg", f"img_{i}.png") for i in range(12))
    train, v = split_validation(pairs, 0.05, 0)
    assert len(v) >= 1 and set(train) | set(v) == set(pairs) and not set(train) & set(v)
    assert split_validation(pairs, 0.05, 0) == (train, v)
    big = tuple((f"x_{i}.jpg", f"x_{i}.png") for i in range(500))
    train, v = split_validation(big, 0.2, 3)
    assert v == tuple(p for p in big if held_out(p[0], 0.2, 3)) and 60 < len(v) < 140
    assert split_validation(pairs[:1], 0.2, 0) == (pairs[:1], ())
