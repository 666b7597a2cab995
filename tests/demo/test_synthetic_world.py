"""The synthetic world: deterministic by seed, exact masks, every failure type present,
out-of-domain scenes without any class, and the datasets written once."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from madmine_demo.world import shapes
from madmine_demo.world.datasets import write
from madmine_demo.world.failures import CORNER_CASES, KINDS, NUM_OBJECT_CLASSES, TRAIN_SIZE, sample
from madmine_demo.world.scene import Scene, Thing, mask_of, render

WILD = [sample(0, "wild", i, "wild") for i in range(300)]


def test_at_least_five_object_classes_with_distinct_shapes_colours_and_textures():
    assert NUM_OBJECT_CLASSES >= 5 and shapes.NAMES[0] == "background"
    assert len({c.rgb for c in shapes.CLASSES}) == NUM_OBJECT_CLASSES
    assert len({c.texture for c in shapes.CLASSES}) == NUM_OBJECT_CLASSES
    masks = [mask_of(Thing(k, 50, 50, 40), (100, 100)) for k in range(1, NUM_OBJECT_CLASSES + 1)]
    for a in range(len(masks)):
        for b in range(a + 1, len(masks)):
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.85, (shapes.NAMES[a + 1], shapes.NAMES[b + 1], iou)


def test_same_seed_same_images_other_seed_other_images():
    for i in (0, 7, 123):
        a_img, a_lab = render(sample(0, "wild", i, "wild"))
        b_img, b_lab = render(sample(0, "wild", i, "wild"))
        assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
        c_img, _ = render(sample(1, "wild", i, "wild"))
        assert c_img.shape != a_img.shape or not np.array_equal(a_img, c_img)
    # an image does not depend on which others were drawn before it
    assert np.array_equal(render(sample(0, "wild", 5, "wild"))[0], render(WILD[5])[0])


def _clean(scene: Scene) -> Scene:
    """The scene without effects that change pixel values after painting."""
    things = [dataclasses.replace(t, alpha=1.0) for t in scene.things]
    return dataclasses.replace(scene, things=things, haze=0.0, blur=0.0, noise=0.0, grayscale=False)


@pytest.mark.parametrize("index", range(0, 300, 23))
def test_masks_are_exact(index):
    scene = _clean(WILD[index])
    img, label = render(scene)
    shape = (scene.height, scene.width)
    expected = np.zeros(shape, np.uint8)
    painted = np.zeros(shape, bool)
    for thing in scene.things:
        m = mask_of(thing, shape)
        expected[m] = thing.class_id
        painted |= m
    assert np.array_equal(label, expected)
    # painting changes exactly the pixels of the masks: elsewhere the image is the background
    background, _ = render(dataclasses.replace(scene, things=[]))
    changed = (img != background).any(axis=2)
    assert not changed[~painted].any()


def test_every_failure_type_is_present_with_its_defining_change():
    counts = Counter(s.kind for s in WILD)
    assert set(counts) == set(KINDS)
    assert all(counts[k] >= 10 for k in CORNER_CASES + ("ood",))
    lo, hi = TRAIN_SIZE
    for s in WILD:
        objects = [t for t in s.things if t.class_id > 0]
        side = min(s.width, s.height)
        if s.kind == "scale":
            assert all(t.size < lo * side for t in objects) or all(t.size > 0.55 * side for t in objects)
        elif s.kind == "viewpoint":
            assert all(min(t.sx, t.sy) <= 0.55 for t in objects)
        elif s.kind == "occlusion":
            assert len(objects) >= 4 and any(t.class_id == 0 for t in s.things)
        elif s.kind == "appearance":
            canonical = [np.asarray(shapes.CLASSES[t.class_id - 1].rgb) / 255 for t in objects]
            assert s.grayscale or s.background not in ("gradient", "blobs", "waves") or any(
                np.abs(np.asarray(t.rgb) - c).max() > 0.2 or t.texture != shapes.CLASSES[t.class_id - 1].texture
                for t, c in zip(objects, canonical)
            )
        elif s.kind == "low_contrast":
            assert all(t.alpha < 0.5 for t in objects) and s.haze > 0
        elif s.kind == "typical":
            assert all(lo * side <= t.size <= hi * side for t in objects)


def test_out_of_domain_images_have_no_class():
    ood = [s for s in WILD if s.kind == "ood"]
    assert ood
    for s in ood:
        assert s.classes == set()
        assert not render(s)[1].any()
    for s in WILD:
        if s.kind != "ood":
            assert s.classes


def test_training_domain_is_upright_canonical_and_uncluttered():
    for i in range(100):
        s = sample(0, "train", i, "train")
        assert 1 <= len(s.things) <= 3 and all(t.class_id > 0 for t in s.things)
        for t in s.things:
            assert abs(t.angle) <= 0.35 and t.shear == 0 and t.texture == shapes.CLASSES[t.class_id - 1].texture
        assert s.background in ("gradient", "blobs", "waves") and not s.grayscale


def test_datasets_are_written_once_with_exact_labels_and_an_index(tmp_path):
    ds = write(tmp_path, "wild", 24, seed=3, domain="wild", workers=1)
    index = ds.index().to_pylist()
    assert [r["stem"] for r in index] == [f"wild_{i:05d}" for i in range(24)]
    from PIL import Image

    for r in index:
        label = np.asarray(Image.open(ds.label(r["stem"])))
        assert label.shape == (r["height"], r["width"])
        assert sorted(set(np.unique(label).tolist()) - {0}) == r["classes"]
        assert Image.open(ds.image(r["stem"])).size == (r["width"], r["height"])
        assert r["classes"] or r["kind"] == "ood" or r["kind"] in KINDS
    before = ds.image(index[0]["stem"]).stat().st_mtime_ns
    write(tmp_path, "wild", 24, seed=3, domain="wild", workers=1)
    assert ds.image(index[0]["stem"]).stat().st_mtime_ns == before  # same seed and size: nothing rewritten


def test_the_web_mix_is_mostly_typical_with_every_corner_kind_a_minority():
    from madmine_demo.world.failures import MIXES, wild_kind

    rng = np.random.default_rng(3)
    n = 8000
    counts = Counter(wild_kind(rng, MIXES["web"]) for _ in range(n))
    for kind, share in MIXES["web"]:
        sd = (share * (1 - share) / n) ** 0.5
        assert abs(counts[kind] / n - share) < 4 * sd, (kind, counts[kind] / n, share)
    assert dict(MIXES["web"])["typical"] == 0.85 and set(dict(MIXES["web"])) == set(KINDS)
    web = Counter(sample(0, "wild", i, "web").kind for i in range(400))
    assert web["typical"] > 300 and sum(web[k] for k in CORNER_CASES + ("ood",)) > 20


def test_the_probe_draws_every_kind_in_turn_and_unknown_domains_are_refused():
    probe = [sample(0, "probe", i, "probe") for i in range(2 * len(KINDS))]
    assert [s.kind for s in probe] == list(KINDS) * 2
    with pytest.raises(ValueError, match="train, wild, web, probe"):
        sample(0, "x", 0, "nowhere")


def test_a_demo_workdir_holds_one_world(tmp_path):
    from rich.console import Console

    from madmine.errors import MadmineError
    from madmine_demo import settings as demo_settings
    from madmine_demo.demo import Clock, _world

    (tmp_path / "world.json").write_text('{"world": "wild", "seed": 0}')
    with pytest.raises(MadmineError, match="holds the demo of the 'wild' world.*'web'"):
        _world(tmp_path, demo_settings.FULL, Clock(Console()))
    assert not (tmp_path / "world").exists()


@pytest.mark.parametrize("option, value, message", [("--world", "moon", "unknown world 'moon': one of wild, web"),
                                                    ("--choose-by", "best", "unknown choose_by 'best'"),
                                                    ("--seeds", "0", "seeds must be within [1, 10], got 0")])
def test_the_demo_refuses_an_unknown_world_or_choice_in_one_line_before_writing_anything(tmp_path, option, value, message):
    from bounded import error_lines, madmine

    result = madmine("demo", "--workdir", str(tmp_path / "work"), option, value)
    assert result.returncode == 2
    assert any(message in line for line in error_lines(result)), result.stderr
    assert not (tmp_path / "work").exists()


def test_the_broad_domain_holds_other_outlines_in_any_colour_labelled_in_their_own_space():
    from madmine_demo.world.failures import broad_scene
    from madmine_demo.world.scene import generator

    scenes = [broad_scene(generator(0, "broad", i)) for i in range(200)]
    objects = [t for s in scenes for t in s.things if t.class_id > 0]
    assert {t.outline for t in objects} == set(shapes.OTHER_SHAPES)  # every other category, none of the six
    assert all(shapes.OTHER_SHAPES[t.class_id - 1] == t.outline for t in objects)
    canonical = {c.rgb for c in shapes.CLASSES}
    assert sum(tuple(round(255 * x) for x in t.rgb) in canonical for t in objects) < len(objects) / 2
    assert len({t.texture for t in objects}) >= 6 and any(s.grayscale for s in scenes)
    for scene in scenes[:20]:  # exact masks: each labelled pixel lies inside its thing's outline
        image, label = render(dataclasses.replace(scene, seed=(0, 1, 2)))
        for k in set(np.unique(label)) - {0}:
            inside = np.zeros(label.shape, bool)
            for t in scene.things:
                if t.class_id == k:
                    inside |= mask_of(t, label.shape)
            assert (inside[label == k]).all()
    for name in shapes.OTHER_SHAPES:  # distinct outlines
        area = mask_of(Thing(1, 50, 50, 40, outline=name), (100, 100)).mean()
        assert 0.05 < area < 0.6, (name, area)


def test_cue_scenes_change_one_thing_of_the_same_training_scene():
    from madmine_demo.world.cues import CUES, cue_scene, render_cue

    for i in range(10):
        base, _ = cue_scene(0, i, "none")
        swapped, painted = cue_scene(0, i, "colour_swap")
        assert [(t.class_id, t.cx, t.texture) for t in swapped.things] == [(t.class_id, t.cx, t.texture) for t in base.things]
        assert all(painted[j] != t.class_id for j, t in enumerate(swapped.things))
        textured, _ = cue_scene(0, i, "texture_swap")
        assert all(a.texture != b.texture and a.rgb == b.rgb for a, b in zip(textured.things, base.things))
        assert cue_scene(0, i, "greyscale")[0].grayscale and not base.grayscale
        clutter, _ = cue_scene(0, i, "class_clutter")
        assert sum(t.class_id == 0 for t in clutter.things) >= 4 and not any(t.class_id == 0 for t in base.things)
        image, label, painted_map = render_cue(0, i, "colour_swap")
        objects = label > 0
        assert (painted_map[objects] != label[objects]).mean() > 0.9 and (painted_map[~objects] == 0).all()
    assert len(CUES) == 6
