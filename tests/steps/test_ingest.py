"""Ingest: content-hash ids, duplicates collapse, re-runs add only what is new, bad files -> errors."""

import shutil

import imagehash
import numpy as np
from PIL import Image

from madmine import tables
from madmine.steps.ingest import image_id_of, ingest
from madmine.workspace import Workspace
from worlds import bad_files, odd_images, write_corpus


def test_ingest_folder_then_rerun_adds_only_new_images(tmp_path):
    ws = Workspace(str(tmp_path / "ws"))
    paths = write_corpus(tmp_path / "a", 6, seed=1)
    shutil.copy(paths[0], tmp_path / "a" / "copy_of_first.png")  # same bytes, other name
    first = ingest(ws, [str(tmp_path / "a")], show_progress=False)
    assert first.added == 6 and first.duplicates == 1 and not first.errors

    manifest = tables.MANIFEST.read(ws).to_pylist()
    by_id = {r["image_id"]: r for r in manifest}
    data = paths[2].read_bytes()
    row = by_id[image_id_of(data)]
    img = Image.open(paths[2])
    assert (row["width"], row["height"], row["bytes"]) == (img.width, img.height, len(data))
    assert row["phash"] == int(str(imagehash.phash(img.convert("RGB"))), 16)

    again = ingest(ws, [str(tmp_path / "a")], show_progress=False)
    assert again.added == 0 and again.already_known == 6 and again.duplicates == 1

    write_corpus(tmp_path / "b", 3, seed=2)
    listing = tmp_path / "uris.txt"
    listing.write_text("\n".join(str(p) for p in sorted((tmp_path / "b").iterdir())) + "\n# a comment\n")
    third = ingest(ws, [str(listing), str(tmp_path / "a" / "*.png")], show_progress=False)
    assert third.added == 3
    ids = tables.MANIFEST.read(ws).column("image_id").to_pylist()
    assert len(ids) == len(set(ids)) == 9
    # nothing left to read starts no executor: on Ray (at an address nothing listens on) the same answer
    on_ray = ingest(ws, [str(listing)], show_progress=False, executor="ray", ray_address="127.0.0.1:1")
    assert (on_ray.added, on_ray.already_known, on_ray.duplicates) == (0, 3, 0)


def test_bad_sources_go_to_errors_and_never_stop_the_ingest(tmp_path):
    ws = Workspace(str(tmp_path / "ws"))
    corpus = tmp_path / "corpus"
    good = write_corpus(corpus, 3)
    bad = bad_files(corpus)
    odd = odd_images(corpus / "odd")
    (corpus / "notes.md").write_text("not an image extension: skipped")
    result = ingest(ws, [str(corpus), str(tmp_path / "missing-folder")], show_progress=False)
    assert result.added == len(good) + len(odd)
    assert result.skipped_non_images == 1
    reasons = {e["uri"]: e["error"] for e in result.errors}
    for path, reason in bad.values():
        assert reasons[str(path)] == reason
    assert reasons[str(tmp_path / "missing-folder")] == "source not found"
    stored = tables.ERRORS.read(ws).to_pylist()
    assert {(e["uri"], e["error"]) for e in stored} == set(reasons.items())
    assert all(e["stage"] == "ingest" for e in stored)


def test_phash_makes_near_duplicates_equal(tmp_path):
    ws = Workspace(str(tmp_path / "ws"))
    rng = np.random.default_rng(0)
    base = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(base).save(tmp_path / "a.png")
    Image.fromarray(base).resize((96, 96)).save(tmp_path / "b.png")
    ingest(ws, [str(tmp_path / "a.png"), str(tmp_path / "b.png")], show_progress=False)
    hashes = tables.MANIFEST.read(ws).column("phash").to_pylist()
    assert len(hashes) == 2
    assert bin(hashes[0] ^ hashes[1]).count("1") <= 4
