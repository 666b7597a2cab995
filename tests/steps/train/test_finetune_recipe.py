"""Each [finetune] recipe setting does what it says, without Ray: the optimiser, batch norm's mode,
the schedules (against torch's own), the augmentations on a fixed seed, the plan's step count (and
that a training epoch takes exactly those steps), which validated checkpoint is kept, the fit guard."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from madmine.steps.train import choice
from madmine.steps.train.augment import CHANNEL_ORDERS, paste_objects, photometric, square, train_example
from madmine.steps.train.dataset import TrainSet
from madmine.steps.train.loop import make_optimizer, set_train_mode, train_epoch
from madmine.steps.train.plan import Plan
from madmine.steps.train.recipe import learning_rate, summed_lr, trains_batch_norm
from madmine.steps.train.run import fit_warning
from madmine.steps.train.sampling import epoch_batches

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PARENT = {"name": "t", "role": "target", "factory": "madmine.models.tiny:tiny_segnet", "input_size": 16,
          "mean": MEAN, "std": STD}


def plan(**fields) -> Plan:
    base = dict(round=0, classes=("background", "a", "b"), parent=PARENT, parent_version="v", rounds=(0,),
                data_digest="d", s=(), s0=(), t0=(), lr_grid=(0.01,), epochs=1, batch_size=2, momentum=0.9,
                weight_decay=5e-4, poly_power=0.9, crop_size=16, scale_range=(1.0, 1.0), flip=False, mixing="union",
                batch_norm="auto", val_every=1, checkpoint_every=1, loader_workers=0, seed=0)
    return Plan(**{**base, **fields})


# ---- optimiser and batch norm ---------------------------------------------------------------------
def test_the_optimizer_setting_picks_the_optimizer_class_with_its_settings():
    params = [nn.Parameter(torch.zeros(3))]
    sgd = make_optimizer("sgd", params, 0.01, 0.9, 5e-4)
    adamw = make_optimizer("adamw", params, 0.001, 0.9, 1e-4)
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 5e-4
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["lr"] == 0.001 and adamw.defaults["weight_decay"] == 1e-4
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("adam", params, 0.1, 0.9, 0.0)


def _statistics_move(train_batch_norm: bool) -> bool:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    before = net[1].running_mean.clone()
    set_train_mode(net, train_batch_norm)
    net(torch.randn(8, 3, 8, 8) * 3 + 1)
    assert net[0].training  # the rest of the network is in train mode either way
    return not torch.equal(before, net[1].running_mean)


def test_batch_norm_learns_its_statistics_only_when_trained_and_auto_decides_by_the_batch():
    assert _statistics_move(True) and not _statistics_move(False)
    assert trains_batch_norm("auto", 8) and trains_batch_norm("auto", 16) and not trains_batch_norm("auto", 2)
    assert trains_batch_norm("train", 1) and not trains_batch_norm("freeze", 64)
    assert plan(batch_size=2).train_batch_norm is False and plan(batch_size=16).train_batch_norm is True


# ---- schedules ------------------------------------------------------------------------------------
def _torch_rates(make, total: int, base: float) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = make(opt)
    rates = []
    for _ in range(total):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("total", [10, 57])
def test_cosine_and_onecycle_follow_torchs_schedulers(total):
    base = 0.003
    onecycle = _torch_rates(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=base, total_steps=total,
                                                                           pct_start=0.15, cycle_momentum=False), total, base)
    cosine = _torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total), total, base)
    np.testing.assert_allclose([learning_rate("onecycle", base, i, total) for i in range(total)], onecycle, rtol=1e-9)
    np.testing.assert_allclose([learning_rate("cosine", base, i, total) for i in range(total)], cosine, rtol=1e-9,
                               atol=1e-15)
    assert all(learning_rate("constant", base, i, total) == base for i in range(total))
    assert summed_lr("constant", base, total) == pytest.approx(base * total)
    poly = [learning_rate("poly", base, i, total, 0.9) for i in range(total)]
    assert poly == pytest.approx([base * (1 - i / total) ** 0.9 for i in range(total)])


# ---- augmentations on a fixed seed ---------------------------------------------------------------------
def _picture(seed: int, h=20, w=24):
    rng = np.random.default_rng(seed)
    label = np.zeros((h, w), np.uint8)
    label[4:12, 5:15] = 1 + seed % 2
    label[0, :] = 255
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), label


def test_photometric_permutes_channels_or_greys_on_a_fixed_seed_and_leaves_labels_alone():
    pixels = np.asarray(_picture(0)[0].resize((16, 16)), dtype=np.uint8)
    outcomes = {"same": 0, "permuted": 0, "grey": 0}
    for seed in range(400):
        out = photometric(pixels, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, photometric(pixels, np.random.default_rng(seed)))  # the seed decides
        if (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all():
            orders = [pixels] + [pixels[:, :, list(o)] for o in CHANNEL_ORDERS]
            assert any(np.abs(out[:, :, 0].astype(int) - np.round(o.astype(np.float32).mean(2))).max() == 0 for o in orders)
            outcomes["grey"] += 1
        elif (out == pixels).all():
            outcomes["same"] += 1
        else:
            assert any((out == pixels[:, :, list(o)]).all() for o in CHANNEL_ORDERS)
            outcomes["permuted"] += 1
    assert abs(outcomes["grey"] / 400 - 0.2) < 0.06 and abs(outcomes["permuted"] / 400 - 0.4) < 0.08
    image, label = _picture(1)
    kw = dict(size=16, crop=16, scale_range=(1.0, 1.0), flip=False, mean=MEAN, std=STD)
    plain = train_example(image, label, rng=np.random.default_rng(3), **kw)
    coloured = train_example(image, label, rng=np.random.default_rng(3), colours=True, **kw)
    np.testing.assert_array_equal(plain[1], coloured[1])


def test_copy_paste_puts_the_sources_objects_and_labels_over_the_image_and_nothing_else():
    image, label = _picture(0)
    source, source_label = _picture(1)
    pixels, target = square(image, label, 16)
    src_pixels, src_target = square(source, source_label, 16)
    out, out_label = paste_objects(pixels, target, src_pixels, src_target)
    objects = (src_target != 0) & (src_target != 255)
    assert objects.any() and (~objects).any()
    np.testing.assert_array_equal(out[objects], src_pixels[objects])
    np.testing.assert_array_equal(out_label[objects], src_target[objects])
    np.testing.assert_array_equal(out[~objects], pixels[~objects])
    np.testing.assert_array_equal(out_label[~objects], target[~objects])
    kw = dict(size=16, crop=16, scale_range=(1.0, 1.0), flip=False, mean=MEAN, std=STD)
    _, y = train_example(image, label, rng=np.random.default_rng(0), paste=(source, source_label), **kw)
    np.testing.assert_array_equal(y, out_label)


def _write_pairs(folder, n: int, prefix: str) -> tuple:
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        image, label = _picture(i)
        image.save(folder / f"{prefix}{i}.png")
        Image.fromarray(label).save(folder / f"{prefix}{i}-label.png")
        pairs.append((str(folder / f"{prefix}{i}.png"), str(folder / f"{prefix}{i}-label.png")))
    return tuple(pairs)


def test_the_copy_paste_share_of_training_examples_get_an_s0_image_pasted_on(tmp_path):
    p = plan(s=_write_pairs(tmp_path, 3, "s"), s0=_write_pairs(tmp_path, 4, "z"), copy_paste=0.3)
    dataset = TrainSet(p.s + p.s0, p, {})
    sources = [dataset.paste_source((0, 1, 0, step, slot)) for step in range(500) for slot in range(4)]
    pasted = [s for s in sources if s is not None]
    assert abs(len(pasted) / len(sources) - 0.3) < 0.04  # 4 standard deviations
    s0_labels = [np.asarray(Image.open(label)) for _, label in p.s0]
    assert all(any(np.array_equal(s[1], lab) for lab in s0_labels) for s in pasted)  # always an S(0) image
    assert all(TrainSet(p.s + p.s0, dataclasses.replace(p, copy_paste=0.0), {}).paste_source((0, 1, 0, k, 0)) is None
               for k in range(20))


# ---- the plan's step count -------------------------------------------------------------------------
def test_the_plan_counts_steps_passes_and_the_budget_cuts_the_last_epoch():
    s, s0 = tuple((f"s{i}", "l") for i in range(10)), tuple((f"z{i}", "l") for i in range(30))
    union = plan(s=s, s0=s0, batch_size=4, epochs=3)
    assert (union.epoch_steps, union.total_steps, union.last_epoch) == (10, 30, 3)  # ceil(40 / 4) per epoch
    assert union.passes() == pytest.approx((3.0, 3.0))
    alternate = plan(s=s, s0=s0, batch_size=4, mixing="alternate", s_share=0.5, epochs=3)
    assert alternate.epoch_steps == 5 and alternate.passes() == pytest.approx((3.0, 1.0))  # 15 steps of 2 + 2
    budget = plan(s=s, s0=s0, batch_size=4, steps=23, epochs=99)
    assert (budget.total_steps, budget.last_epoch, budget.steps_in(3), budget.steps_in(1)) == (23, 3, 3, 10)
    assert "23 steps of 4 images from S and S(0)" in budget.describe()
    assert "2.3 passes over S (10 images), 2.3 over S(0) (30)" in budget.describe()  # 92 images of 40
    s_only = plan(s=s, s0=(), batch_size=4, mixing="alternate")
    assert epoch_batches(10, 0, 4, 1, 0, 1, 0, "alternate", 0.5) == [b for b in epoch_batches(10, 0, 4, 1, 0, 1, 0,
                                                                                               "alternate", 1.0)]
    assert s_only.passes() == (pytest.approx(1.0), 0.0)


def test_a_training_epoch_takes_exactly_the_planned_steps_at_the_scheduled_rates(tmp_path):
    from madmine.models.tiny import TinySegNet

    p = plan(s=_write_pairs(tmp_path, 5, "s"), s0=_write_pairs(tmp_path, 3, "z"), batch_size=2, steps=7,
             optimizer="adamw", schedule="cosine", batch_norm="freeze")
    assert (p.epoch_steps, p.last_epoch) == (4, 2)
    torch.manual_seed(0)
    net = TinySegNet(3, width=4)
    optimizer = make_optimizer(p.optimizer, net.parameters(), 0.01, p.momentum, p.weight_decay)
    dataset = TrainSet(p.s + p.s0, p, {})
    seen = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    for epoch in range(1, p.last_epoch + 1):
        train_epoch(net, net, optimizer, p, 0.01, epoch, "cpu", 0, 1, dataset)
    assert len(seen) == 7
    assert seen == pytest.approx([0.01 * (1 + math.cos(math.pi * i / 7)) / 2 for i in range(7)])


# ---- the checkpoint kept, and the fit guard ------------------------------------------------------------
def test_the_kept_checkpoint_is_the_best_validated_epoch_not_the_last():
    parent = {"epoch": 0, "val_miou": 0.80, "v_failures": 0.9, "v_image_miou": 0.3}
    curve = [{"epoch": 1, "val_miou": 0.79, "v_failures": 0.6, "v_image_miou": 0.45},
             {"epoch": 2, "val_miou": 0.795, "v_failures": 0.4, "v_image_miou": 0.50},  # best within the bound
             {"epoch": 3, "val_miou": 0.75, "v_failures": 0.2, "v_image_miou": 0.60},  # forgot T(0)
             {"epoch": 4, "val_miou": 0.81, "v_failures": 0.4, "v_image_miou": 0.50}]  # ties with 2: earlier kept

    def kept(choose_by):
        best = None
        for point in curve:
            if choice.better(point, best, parent, choose_by, 0.01):
                best = point
        return best["epoch"]

    assert kept("validation") == 2 and kept("t0") == 4


def test_the_fit_guard_fires_above_its_share_only():
    line = fit_warning(0.78, 78, 0.5)
    assert "78% of the 78 S images it trained on" in line and "fit_guard = 0.5" in line and "steps" in line
    assert fit_warning(0.5, 78, 0.5) is None and fit_warning(0.1, 78, 0.5) is None and fit_warning(None, 0, 0.5) is None
