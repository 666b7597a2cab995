"""The simulated people: raters whose scores follow the target's true IoU and who mark
out-of-domain images; an annotator whose labels are the world's masks."""

from __future__ import annotations

import json
import warnings

import numpy as np

from madmine.metrics import spearman
from madmine_demo.people import raters
from madmine_demo.people.annotator import correct_export
from madmine_demo.people.raters import RATERS, vote


def test_scores_follow_the_true_iou_with_noise():
    rng = np.random.default_rng(0)
    ious = rng.uniform(0, 1, 600)
    for rater in RATERS:
        scores = np.array([vote(float(q), False, rater, 0, f"img{i}") for i, q in enumerate(ious)])
        assert set(scores.tolist()) <= {1, 2, 3, 4, 5}
        rho = spearman(ious, scores)
        assert 0.8 < rho < 1.0, (rater.name, rho)  # follows the IoU, but not exactly
        assert scores[ious < 0.2].mean() < 1.6 and scores[ious > 0.95].mean() > 4.4
    # raters disagree with each other now and then (independent noise and their own leniency)
    a = [vote(float(q), False, RATERS[0], 0, f"img{i}") for i, q in enumerate(ious)]
    b = [vote(float(q), False, RATERS[1], 0, f"img{i}") for i, q in enumerate(ious)]
    assert 0.05 < np.mean(np.array(a) != np.array(b)) < 0.8


def test_votes_are_reproducible():
    assert [vote(0.5, False, r, 3, "x") for r in RATERS] == [vote(0.5, False, r, 3, "x") for r in RATERS]


def test_out_of_domain_images_are_marked_and_in_domain_ones_never():
    ood_votes = [[vote(0.1, True, r, 0, f"ood{i}") for r in RATERS] for i in range(400)]
    marked_by_someone = np.mean([any(v is None for v in votes) for votes in ood_votes])
    assert marked_by_someone > 0.99  # one mark drops the image
    assert np.mean([v is None for votes in ood_votes for v in votes]) > 0.9
    assert all(vote(q, False, r, 0, f"in{i}") is not None for i, q in enumerate(np.linspace(0, 1, 50)) for r in RATERS)


def test_three_raters():
    assert len(RATERS) == 3 and len({r.name for r in RATERS}) == 3
    assert raters.NOISE_SD > 0


class _Truth:
    def __init__(self, masks):
        self.masks = masks

    def mask(self, image_id):
        return self.masks[image_id]


def test_annotator_replaces_the_pre_annotation_with_the_true_mask(tmp_path):
    from pycocotools import mask as mask_util

    true = np.zeros((20, 30), np.uint8)
    true[2:8, 3:9] = 2
    true[10:18, 12:25] = 5
    empty = np.zeros((16, 16), np.uint8)
    doc = {
        "images": [{"id": 1, "file_name": "aaa.jpg", "width": 30, "height": 20, "image_id": "aaa"},
                   {"id": 2, "file_name": "bbb.jpg", "width": 16, "height": 16, "image_id": "bbb"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [20, 30], "counts": "0"}}],
        "categories": [{"id": k, "name": f"c{k}"} for k in range(1, 7)] + [{"id": 255, "name": "ignore"}],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    assert correct_export(tmp_path, _Truth({"aaa": true, "bbb": empty})) == 2
    out = json.loads((tmp_path / "annotations.json").read_text())
    painted = np.zeros((20, 30), np.uint8)
    for ann in out["annotations"]:
        if ann["image_id"] == 1:
            rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools predates NumPy 2
                painted[mask_util.decode(rle).astype(bool)] = ann["category_id"]
    assert np.array_equal(painted, true)
    # an image without objects is finished as all background, so an import counts it as labelled
    background = {c["id"] for c in out["categories"] if c["name"] == "background"}
    assert [a["category_id"] for a in out["annotations"] if a["image_id"] == 2] == list(background)
