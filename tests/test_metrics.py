"""metrics against an independent, loop-by-loop numpy computation of step 1 of the method, docs/paper.md."""

import numpy as np
import pytest

from madmine import metrics
from references import reference_d


def random_map(rng, shape, c, ignore_fraction=0.1):
    m = rng.integers(0, c, size=shape).astype(np.uint8)
    m[rng.random(shape) < ignore_fraction] = 255
    return m


@pytest.mark.parametrize("seed", range(20))
def test_discrepancy_matches_reference_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 8))
    shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
    a, b = random_map(rng, shape, c), random_map(rng, shape, c)
    inter, union, d = metrics.pair_summary(a, b, c)
    ref = reference_d(a, b, c)
    assert (d is None) == (ref is None)
    if ref is not None:
        assert d == pytest.approx(ref, abs=1e-12)
    valid = (a != 255) & (b != 255)
    for k in range(c):
        assert inter[k] == np.sum((a == k) & (b == k) & valid)
        assert union[k] == np.sum(((a == k) | (b == k)) & valid)


def test_identical_maps_have_zero_discrepancy():
    rng = np.random.default_rng(1)
    a = random_map(rng, (30, 30), 5)
    assert metrics.pair_summary(a, a.copy(), 5)[2] == 0.0


def test_disjoint_maps_have_discrepancy_one():
    a = np.zeros((10, 10), np.uint8)
    b = np.ones((10, 10), np.uint8)
    assert metrics.pair_summary(a, b, 3)[2] == 1.0


def test_discrepancy_is_symmetric():
    rng = np.random.default_rng(2)
    a, b = random_map(rng, (25, 17), 6), random_map(rng, (25, 17), 6)
    assert metrics.pair_summary(a, b, 6)[2] == pytest.approx(metrics.pair_summary(b, a, 6)[2], abs=1e-15)


def test_pixels_that_are_255_in_either_map_are_ignored():
    a = np.array([[0, 1, 255, 2]], np.uint8)
    b = np.array([[0, 1, 2, 255]], np.uint8)
    inter, union, d = metrics.pair_summary(a, b, 3)
    assert union.tolist() == [1, 1, 0]
    assert d == 0.0


def test_classes_absent_from_both_maps_are_excluded_from_the_mean():
    a = np.array([[0, 0, 1, 1]], np.uint8)
    b = np.array([[0, 1, 1, 1]], np.uint8)
    # class 0: I=1 U=2; class 1: I=2 U=3; classes 2..9 absent -> mean over two classes only
    assert metrics.pair_summary(a, b, 10)[2] == pytest.approx(1 - (0.5 + 2 / 3) / 2)


def test_image_with_no_valid_pixel_gets_no_d():
    a = np.full((4, 4), 255, np.uint8)
    assert metrics.pair_summary(a, np.zeros((4, 4), np.uint8), 3)[2] is None


def test_class_pixels_ignores_255():
    m = np.array([[0, 2, 2, 255]], np.uint8)
    assert metrics.class_pixels(m, 4).tolist() == [1, 0, 2, 0]


def test_dataset_miou_is_nanmean_over_occurring_classes():
    pred = np.array([0, 0, 1, 1, 255], np.uint8)
    label = np.array([0, 1, 1, 1, 1], np.uint8)
    conf = metrics.confusion(pred, label, 4)
    ious = [1 / 2, 2 / 3]  # classes 2, 3 never occur
    assert metrics.dataset_miou(conf) == pytest.approx(np.mean(ious))


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_maps_entropy_and_msp_match_numpy(dtype):
    import torch

    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.normal(scale=4.0, size=(2, 4, 5, 6))).to(getattr(torch, dtype))
    given = logits.clone()
    z = logits.double().numpy()  # what the model said, exactly (bf16 -> float64 is exact)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    maps, ent, msp = metrics.maps_entropy_msp(logits)
    assert torch.equal(logits, given)  # the caller's logits are left alone
    np.testing.assert_array_equal(maps.numpy(), z.argmax(axis=1))
    assert maps.dtype == torch.uint8
    np.testing.assert_allclose(ent, (-(probs * np.log(probs)).sum(axis=1)).mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(msp, probs.max(axis=1).mean(axis=(1, 2)), rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_strided_uncertainty_is_the_mean_over_the_subgrid_and_maps_stay_whole(dtype):
    import torch

    rng = np.random.default_rng(5)
    logits = torch.from_numpy(rng.normal(scale=3.0, size=(3, 5, 9, 8))).to(getattr(torch, dtype))
    z = logits.double().numpy()
    sub = z[:, :, ::2, ::2]
    probs = np.exp(sub) / np.exp(sub).sum(axis=1, keepdims=True)
    maps, ent, msp = metrics.maps_entropy_msp(logits, stride=2)
    assert maps.shape == (3, 9, 8) and ent.shape == msp.shape == (3,)
    np.testing.assert_array_equal(maps.numpy(), z.argmax(axis=1))  # full resolution
    np.testing.assert_allclose(ent, (-(probs * np.log(probs)).sum(axis=1)).mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(msp, probs.max(axis=1).mean(axis=(1, 2)), rtol=1e-5)


def test_confident_logits_give_no_nan():
    import torch

    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 0] = 200.0  # softmax underflows to exactly 0 for the other classes
    maps, ent, msp = metrics.maps_entropy_msp(logits)
    assert maps.sum() == 0 and ent[0] == pytest.approx(0.0, abs=1e-12) and msp[0] == pytest.approx(1.0)


def test_miou_from_sums_rows_equals_miou_from_sums_row_by_row():
    rng = np.random.default_rng(11)
    union = rng.integers(0, 30, (6, 5)).astype(float)
    union[rng.random((6, 5)) < 0.3] = 0
    union[0] = 0  # a row with no class present
    inter = np.floor(union * rng.random((6, 5)))
    rows = metrics.miou_from_sums_rows(inter, union)
    for k in range(6):
        expected = metrics.miou_from_sums(inter[k], union[k])
        assert (np.isnan(rows[k]) and np.isnan(expected)) or rows[k] == pytest.approx(expected)
    assert np.isnan(rows[0])


@pytest.mark.parametrize("seed", range(6))
def test_batch_metrics_match_the_per_image_loop(seed):
    """One joint histogram per batch gives what the image-by-image loop gives: I, U and both
    maps' class pixels (each map's own 255 ignored), with 255 anywhere in either map."""
    import torch

    rng = np.random.default_rng(seed)
    c, n = int(rng.integers(2, 9)), int(rng.integers(1, 12))
    shape = (n, int(rng.integers(1, 30)), int(rng.integers(1, 30)))
    a, b = random_map(rng, shape, c, 0.2), random_map(rng, shape, c, 0.2)
    joint = metrics.batch_joint_counts(torch.from_numpy(a), torch.from_numpy(b), c)
    inter, union = (t.numpy() for t in metrics.joint_pair_summary(joint, c))
    pixels_a, pixels_b = (t.numpy() for t in metrics.joint_class_pixels(joint, c))
    pair_i, pair_u = (t.numpy() for t in metrics.batch_pair_summary(torch.from_numpy(a), torch.from_numpy(b), c))
    own = metrics.batch_class_pixels(torch.from_numpy(a), c).numpy()
    for i in range(n):
        ref_i, ref_u, _ = metrics.pair_summary(a[i], b[i], c)
        assert inter[i].tolist() == ref_i.tolist() == pair_i[i].tolist()
        assert union[i].tolist() == ref_u.tolist() == pair_u[i].tolist()
        assert pixels_a[i].tolist() == metrics.class_pixels(a[i], c).tolist() == own[i].tolist()
        assert pixels_b[i].tolist() == metrics.class_pixels(b[i], c).tolist()
    assert int(joint.sum()) == a.size


@pytest.mark.parametrize("channels_last", [False, True])
def test_label_ids_are_numpys_first_argmax_ties_included(channels_last):
    import torch

    rng = np.random.default_rng(11)
    z = rng.integers(-3, 4, size=(2, 7, 12, 10)).astype(np.float32)  # many ties
    logits = torch.from_numpy(z).to(torch.bfloat16)
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    ties = ((z == z.max(axis=1, keepdims=True)).sum(axis=1) > 1).mean()
    assert ties > 0.2
    np.testing.assert_array_equal(metrics.label_ids(logits).numpy(), z.argmax(axis=1))


def test_uncertainty_stride_is_two_for_small_maps_and_samples_large_ones_at_about_128():
    assert [metrics.uncertainty_stride(s) for s in (32, 64, 255, 383, 384, 513, 1024)] == [2, 2, 2, 2, 3, 4, 8]
    assert all(100 <= -(-s // metrics.uncertainty_stride(s)) <= 192 for s in range(256, 2049))


def test_sign_test_is_the_exact_two_sided_binomial():
    """Twice the smaller tail of Binomial(n, 1/2), counted with math.comb (capped at 1)."""
    import math

    for wins_a, wins_b in ((14, 16), (20, 5), (0, 7), (3, 3), (0, 0)):
        n, k = wins_a + wins_b, min(wins_a, wins_b)
        tail = sum(math.comb(n, j) for j in range(k + 1)) / 2**n if n else 0.5
        assert metrics.sign_test(wins_a, wins_b) == pytest.approx(min(1.0, 2 * tail))


# ---- repair: fixed and broken images, and the Wilson interval ------------------------------------
@pytest.mark.parametrize("k, n", [(0, 1), (0, 22), (3, 22), (18, 22), (22, 22), (41, 78), (1, 700)])
def test_wilson_interval_matches_scipys(k, n):
    from scipy.stats import binomtest

    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert metrics.wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_wilson_interval_of_nothing_is_nan_and_a_bad_count_is_refused():
    assert all(np.isnan(v) for v in metrics.wilson_interval(0, 0))
    with pytest.raises(ValueError):
        metrics.wilson_interval(5, 4)


def test_repair_counts_fixed_and_broken_images_as_counted_by_hand():
    #         image:   0     1     2     3     4     5     6     7     8
    parent = [0.10, 0.45, 0.30, 0.90, 0.70, 0.55, 0.20, np.nan, 0.80]
    child = [0.60, 0.40, 0.50, 0.95, 0.30, 0.49, 0.20, 0.90, np.nan]
    # the parent fails on 0, 1, 2, 6 (below 0.5); the child passes 0 and 2 of them: fixed 2 of 4.
    # the parent passes 3, 4, 5; the child fails 4 and 5: broke 2 of 3. Images 7 and 8 lack a figure.
    r = metrics.repair(parent, child, 0.5)
    assert (r.failures, r.fixed, r.passing, r.broke, r.images, r.failures_after) == (4, 2, 3, 2, 7, 4)
    assert r.parent_image_miou == pytest.approx(np.mean([0.10, 0.45, 0.30, 0.90, 0.70, 0.55, 0.20]))
    assert r.image_miou == pytest.approx(np.mean([0.60, 0.40, 0.50, 0.95, 0.30, 0.49, 0.20]))
    assert r.fixed_interval == metrics.wilson_interval(2, 4) and r.broke_interval == metrics.wilson_interval(2, 3)
    text = r.describe()
    assert text.startswith("fixed 2 of 4 failures (50%; 95% interval 15-85%), broke 2 of 3 passing images (67%;")
    assert "per-image mIoU 0.457 -> 0.491" in text
    with pytest.raises(ValueError):
        metrics.repair([0.1, 0.2], [0.3], 0.5)
