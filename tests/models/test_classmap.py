"""Class maps: the three ways to write one, what they refuse, the shipped ADE20K and COCO maps,
and the uncertainty and training likelihood over mapped classes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from madmine import metrics
from madmine.models.classmap import (
    BUILTIN_DIR,
    ClassMapError,
    builtin_maps,
    from_csv,
    from_table,
    load_class_map,
)
from madmine.models.registry import config_log_probs

REPO = Path(__file__).resolve().parents[2]
VOC = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
       "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
CLASSES = ("background", "red", "green", "blue")


def test_inline_tables_map_ids_and_names_and_default_to_ignore():
    cmap = from_table({"0": "background", "3": "red", "grass": "green", "*": "ignore"}, CLASSES)
    lut = cmap.lut(5, labels=["sky", "tree", "grass", "brick", "sea"])
    np.testing.assert_array_equal(lut, [0, 255, 2, 1, 255])
    everything_else = from_table({"2": "blue", "*": "background"}, CLASSES).lut(4)
    np.testing.assert_array_equal(everything_else, [0, 0, 3, 0])
    assert cmap.coverage(lut) == (["background", "red", "green"], ["blue"])


@pytest.mark.parametrize(
    "table, outputs, labels, message",
    [
        ({"0": "purple"}, 4, None, "'purple' is not a config class"),
        ({"0": "bakground"}, 4, None, "did you mean 'background'"),
        ({"7": "red"}, 4, None, "maps model class 7, but the model predicts only 4 classes"),
        ({"grass": "green"}, 4, None, "does not name its classes; use class ids"),
        ({"gras": "green"}, 3, ["sky", "grass", "sea"], "did you mean 'grass'"),
        ({"0": 3}, 4, None, 'map to a config class name or "ignore"'),
        ({"*": "ignore"}, 4, None, "maps nothing"),
    ],
)
def test_inline_tables_refuse_what_cannot_be_meant(table, outputs, labels, message):
    with pytest.raises(ClassMapError, match=message):
        from_table(table, CLASSES).lut(outputs, labels)


def test_csv_lists_every_model_class_and_must_fit_the_model():
    text = "# a comment\nid,name,class\n0,sky,background\n1,lava,red\n2,leaf,green\n3,void,\n4,puddle,ignore\n"
    cmap = from_csv(text, CLASSES, "'m.csv'")
    assert cmap.size == 5 and cmap.names == ("sky", "lava", "leaf", "void", "puddle")
    np.testing.assert_array_equal(cmap.lut(5), [0, 1, 2, 255, 255])
    with pytest.raises(ClassMapError, match="predicts 6 classes but its class_map 'm.csv' lists 5"):
        cmap.lut(6)
    with pytest.raises(ClassMapError, match=r"every model class 0..2 once; missing \[1\]"):
        from_csv("id,class\n0,red\n2,blue\n3,green\n", CLASSES, "x")
    with pytest.raises(ClassMapError, match="listed twice"):
        from_csv("id,class\n0,red\n0,blue\n", CLASSES, "x")
    with pytest.raises(ClassMapError, match="header must name the columns id and class"):
        from_csv("model,target\n0,red\n", CLASSES, "x")


def test_the_digest_follows_what_the_map_does():
    a = from_table({"0": "red", "1": "blue"}, CLASSES)
    assert a.digest() == from_table({"1": "blue", "0": "red"}, CLASSES).digest()  # order of writing is no change
    assert a.digest() != from_table({"0": "red", "1": "green"}, CLASSES).digest()
    assert a.digest() != from_table({"0": "red", "1": "blue"}, ("background", "blue", "red", "green")).digest()


# ---- the shipped maps ------------------------------------------------------------------------------
ADE_SPOTS = {0: "wall", 2: "sky", 12: "person", 20: "car", 76: "boat", 89: "television receiver", 90: "airplane",
             116: "minibike", 127: "bicycle", 149: "flag"}
COCO_SPOTS = {0: "person", 4: "airplane", 57: "couch", 62: "tv", 79: "toothbrush", 80: "banner", 132: "rug-merged"}


@pytest.mark.parametrize("name, count, spots, never", [
    ("ade20k-voc", 150, ADE_SPOTS, ["bird", "cat", "cow", "dog", "horse", "sheep", "train"]),
    ("coco-voc", 133, COCO_SPOTS, []),
])
def test_shipped_maps_name_voc_classes_only_and_list_every_model_class(name, count, spots, never):
    assert name in builtin_maps()
    cmap = load_class_map(name, VOC)  # every class they name is a VOC class (or ignore), else this raises
    assert cmap.size == count and len(cmap.names) == count
    for index, model_name in spots.items():
        assert cmap.names[index].split(",")[0] == model_name
    lut = cmap.lut(count)
    assert cmap.coverage(lut)[1] == never
    by_name = {n.split(",")[0]: VOC[v] if v != 255 else "ignore" for n, v in zip(cmap.names, lut)}
    assert by_name["person"] == "person" and by_name.get("airplane") == "aeroplane"
    assert (by_name.get("television receiver") or by_name.get("tv")) == "tvmonitor"
    assert by_name.get("truck") == "ignore" and (by_name.get("wall") or by_name.get("wall-brick")) == "background"


def test_shipped_maps_are_package_data():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["madmine"]
    package = REPO / "src" / "madmine"
    shipped = {p for pattern in data for p in package.glob(pattern)}
    assert set(BUILTIN_DIR.glob("*.csv")) <= shipped and len(list(BUILTIN_DIR.glob("*.csv"))) >= 2


# ---- uncertainty and likelihood over mapped classes ----------------------------------------------------------
def test_entropy_and_max_softmax_of_a_mapped_target_are_over_config_classes():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 6)
    lut = torch.tensor([0, 0, 1, 255, 2])  # two model classes mean background; one is ignored
    maps, entropy, msp = metrics.maps_entropy_msp(logits, stride=1, lut=lut, num_classes=3)
    p = torch.softmax(logits.double(), dim=1)
    merged = torch.stack([p[:, 0] + p[:, 1], p[:, 2], p[:, 4], torch.zeros_like(p[:, 0]), p[:, 3]], dim=1)
    expected_entropy = -(merged * torch.log(merged.clamp_min(1e-300))).sum(1).mean(dim=(1, 2))
    np.testing.assert_allclose(entropy, expected_entropy.numpy(), rtol=1e-5)
    np.testing.assert_allclose(msp, merged.amax(1).mean(dim=(1, 2)).numpy(), rtol=1e-5)
    np.testing.assert_array_equal(maps.numpy(), lut[logits.argmax(1)].numpy())
    _, raw_entropy, _ = metrics.maps_entropy_msp(logits, stride=1)
    assert (entropy < raw_entropy).all()  # merging classes can only remove doubt


def test_training_likelihood_sums_the_probabilities_of_each_config_class():
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    lut = torch.tensor([0, 0, 1, 255, 2])
    log_p = config_log_probs(logits, lut, 3)
    p = torch.softmax(logits.detach().double(), dim=1)
    expected = torch.stack([p[:, 0] + p[:, 1], p[:, 2], p[:, 4], p[:, 3]], dim=1)
    np.testing.assert_allclose(log_p.detach().exp().numpy(), expected.numpy(), rtol=1e-5)
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    loss = torch.nn.functional.cross_entropy(log_p, target)
    loss.backward()  # differentiable through the merge
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    heads = config_log_probs({"out": logits.detach(), "aux": logits.detach()}, lut, 3)
    assert set(heads) == {"out", "aux"} and heads["aux"].shape == (2, 4, 4, 4)
