"""The MAD competition protocol (Wang et al. 2020, as the paper runs it for Table 2), rule by rule
against an independent reading: the pool leaves out both models' training images; each class
k forms one group per partitioning model (A's map, then B's) of the images whose map has k at
an area fraction inside the size bounds; the top n of each group by d(A, B) are kept; one rater's
out-of-domain vote (through the rating app) drops an image; only images every rater judged in
domain are labelled and scored."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest

import evaluate_world as world
from madmine import tables
from madmine.errors import EvaluationError
from madmine.steps.evaluation import compete as cp
from madmine.steps.rating import store
from madmine.steps.rating.tokens import add_rater
from references import reference, reference_d
from worlds import store_maps

C = len(world.CLASSES)
BOUNDS = {k: (0.05, 0.45) for k in range(1, C - 1)}  # the last class has no labelled example: no group


@pytest.fixture
def w(tmp_path):
    w = world.build(tmp_path / "w", n=40, min_raters=None)  # every registered rater votes
    rows = [{"class_id": 0, "class_name": world.CLASSES[0], "p": 0.3, "q": 0.9, "n_images": 5}]
    rows += [{"class_id": k, "class_name": world.CLASSES[k], "p": BOUNDS[k][0] if k in BOUNDS else None,
              "q": BOUNDS[k][1] if k in BOUNDS else None, "n_images": 5 if k in BOUNDS else 0} for k in range(1, C)]
    tables.BOUNDS.write(w.ws, pa.Table.from_pylist(rows))
    # two fine-tuned versions of the target: MAD's of round 1 and entropy's of round 0, each with its S
    entropy_s = [i for k, i in enumerate(w.ids) if k % 5 == 2]
    tables.SELECTED.write(w.ws, pa.Table.from_pylist([{"round": 0, "image_id": i, "uri": "", "rank": k + 1}
                                                      for k, i in enumerate(entropy_s)]), round=0, strategy="entropy")
    w.maps = {}
    for n, (version, selection, round_, strength) in enumerate((("ft-mad", "mad", 1, 0.3), ("ft-ent", "entropy", 0, 0.7))):
        maps = {i: world.damage(w.labels[i], (16, 32), k, strength * (k % 3) / 2, seed=5 + n) for k, i in enumerate(w.ids)}
        store_maps(w.ws, "target", version, maps)
        row = {"model": "target", "model_version": version, "role": "target", "weights_uri": None, "parent_version": None,
               "created_at": world.T0 + timedelta(days=1 + n), "round": round_, "selection": selection}
        tables.MODELS.write(w.ws, pa.Table.from_pylist([row]), model="target", round=round_, selection=selection)
        w.maps[version] = maps
    w.trained = {"ft-mad": {i for k, i in enumerate(w.ids) if k % 7 == 0 or k % 11 == 3}, "ft-ent": set(entropy_s)}
    return w


def expected_selection(w, a: str, b: str, n: int) -> list[dict]:
    """Loops over the definition: groups per (partitioning map, class), top n by d, one row per image."""
    pool = [i for i in w.ids if i not in w.trained[a] | w.trained[b]]
    d = {i: reference_d(w.maps[a][i], world.nearest(w.maps[b][i], w.maps[a][i].shape), C) for i in pool}
    kept: dict[str, tuple] = {}
    for direction, version in (("a", a), ("b", b)):
        for k, (p, q) in BOUNDS.items():
            members = []
            for i in pool:
                m = w.maps[version][i]
                fraction = np.sum(m == k) / m.size
                if np.sum(m == k) > 0 and p <= fraction <= q and d[i] is not None:
                    members.append(i)
            for rank, i in enumerate(sorted(members, key=lambda i: (-d[i], i))[:n], start=1):
                key = (rank, k, direction)
                if i not in kept or key < kept[i]:
                    kept[i] = key
    order = sorted(kept, key=lambda i: (-d[i], i))
    return [{"image_id": i, "d": d[i], "rank": r, "group_rank": kept[i][0], "class_id": kept[i][1],
             "direction": kept[i][2]} for r, i in enumerate(order, start=1)]


def test_selection_is_per_class_by_each_map_inside_the_bounds_outside_both_training_sets(w):
    comp = cp.compete(w.config, w.ws, "target@mad", "target@entropy", n=2)
    assert comp.protocol == "mad" and comp.a.version == "ft-mad" and comp.b.version == "ft-ent"
    expected = expected_selection(w, "ft-mad", "ft-ent", 2)
    assert len(expected) > 8  # the world is rich enough to test something
    got = [{k: r[k] for k in ("image_id", "rank", "group_rank", "class_id", "direction")} for r in comp.selection]
    assert got == [{k: e[k] for k in ("image_id", "rank", "group_rank", "class_id", "direction")} for e in expected]
    for r, e in zip(comp.selection, expected):
        assert r["d"] == pytest.approx(e["d"]) and r["protocol"] == "mad"
    picked = {r["image_id"] for r in comp.selection}
    assert not picked & (w.trained["ft-mad"] | w.trained["ft-ent"])  # neither model's training images
    assert comp.pool == len(set(w.ids) - w.trained["ft-mad"] - w.trained["ft-ent"])
    # the size filter and the class partition matter: the top of the pool by d alone differs
    proxy = cp.compete(w.config, w.ws, "target@mad", "target@entropy", n=len(picked), protocol="d-ranking")
    assert {r["image_id"] for r in proxy.selection} != picked


def test_raters_veto_out_of_domain_images_and_only_judged_images_count(w):
    for rater in ("ann", "bob"):
        add_rater(w.ws, rater)
    comp = cp.compete(w.config, w.ws, "target@mad", "target@entropy", n=2)
    ids = [r["image_id"] for r in comp.selection]
    assert comp.min_raters == 2 and comp.waiting_raters == ids and comp.labelled == [] and comp.winner is None
    vetoed, half = ids[0], ids[1]
    for image_id in ids:
        if image_id != half:
            store.record(w.ws, comp.rating_key, image_id, "ann", 3)
            store.record(w.ws, comp.rating_key, image_id, "bob", None if image_id == vetoed else 4)
    store.record(w.ws, comp.rating_key, half, "ann", 2)  # bob has not judged it yet
    again = cp.compete(w.config, w.ws, "target@mad", "target@entropy")
    assert again.reused and again.vetoed == [vetoed] and again.waiting_raters == [half]
    counted = [i for i in ids if i not in (vetoed, half)]
    assert again.labelled == counted  # every image of the world is labelled; only judged, in-domain ones count
    miou_a, _, _ = reference(w.maps["ft-mad"], w.labels, counted)
    miou_b, _, _ = reference(w.maps["ft-ent"], w.labels, counted)
    assert again.miou_a == pytest.approx(miou_a) and again.miou_b == pytest.approx(miou_b)
    saved = cp.results(w.ws).to_pylist()[0]
    assert (saved["protocol"], saved["vetoed"], saved["waiting_raters"]) == ("mad", 1, 1)


def test_the_rating_app_serves_a_competition_blind_and_stores_its_vetoes(w):
    from fastapi.testclient import TestClient

    from madmine.steps.rating.app import create_app

    comp = cp.compete(w.config, w.ws, "target@mad", "target@entropy", n=1)
    token = add_rater(w.ws, "ann")
    rs = cp.rating_set(w.config, w.ws, comp.id)
    assert set(rs.image_ids) == {r["image_id"] for r in comp.selection}
    client = TestClient(create_app(w.ws, w.config, rs))
    headers = {"Authorization": f"Bearer {token}"}
    session = client.get("/api/session", headers=headers).json()
    assert session["round"] == comp.rating_key and session["target"] == "A" and session["competitors"] == ["B"]
    image_id = rs.image_ids[0]
    assert client.get(f"/api/maps/A/{image_id}", headers=headers).status_code == 200
    assert client.get(f"/api/maps/target/{image_id}", headers=headers).status_code == 404  # blind: no model names
    assert client.post("/api/ratings", headers=headers, json={"image_id": image_id, "out_of_domain": True}).status_code == 200
    assert w.ws.exists(store.events_dir(w.ws, comp.rating_key, "ann"))
    assert cp.compete(w.config, w.ws, "target@mad", "target@entropy").vetoed == [image_id]


def test_without_bounds_the_protocol_says_what_to_run(tmp_path):
    w = world.build(tmp_path / "w", n=10)
    with pytest.raises(EvaluationError, match="madmine bounds LABELS_DIR"):
        cp.compete(w.config, w.ws, "target", "fcn")
