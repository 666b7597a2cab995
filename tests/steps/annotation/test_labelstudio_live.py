"""Against a real Label Studio server (tests/support/labelstudio_server.py): push a round's set,
push again without duplicates, serve every image (local files and presigned S3 URLs),
annotate through the API and in the browser, pull pixel-exact masks; the export folder's
README steps work as written, side by side with another export.

MADMINE_SCREENSHOTS=1 saves the labelling page to docs/labelstudio-labeling.png.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
from label_studio_sdk import LabelStudio
from label_studio_sdk.converter import brush
from PIL import Image
from typer.testing import CliRunner

import rating_world
from html_page import HtmlPage
from madmine import tables
from madmine.cli import state as cli_state
from madmine.cli.annotate import annotate_app
from madmine.config import load_config
from madmine.images import decode_map_png
from madmine.metrics import IGNORE
from madmine.steps.annotation import ignore_name
from madmine.steps.annotation.bundle import AnnotationError
from madmine.steps.annotation.exchange import export, import_
from madmine.steps.annotation.lsproject import PULLED, pull, push, push_folder
from madmine.steps.rating import selection, store

CLASSES = rating_world.CLASSES
IGNORE_NAME = ignore_name(tuple(CLASSES))
REPO = Path(__file__).resolve().parents[3]
SCREENSHOT = REPO / "docs" / "labelstudio-labeling.png"


def build(ls, name: str, *, large: bool = False, workspace_uri: str = "work/", extra: str = "",
          token_in_config: bool = True, parent: Path | None = None, document_root: Path | None = None):
    """A rated round 0 whose S is every image, in a folder below the server's document root (or `parent`)."""
    toml = f'\n[labelstudio]\nurl = "{ls.url}"\ndocument_root = "{document_root or ls.document_root}"\n'
    toml += f'token = "{ls.token}"\n' if token_in_config else ""
    world = rating_world.build((parent or ls.document_root) / re.sub(r"[^a-z0-9]+", "-", name.lower()), large=large,
                               workspace_uri=workspace_uri, extra_toml=toml + extra)
    for k, image_id in enumerate(world.image_ids):
        store.record(world.ws, 0, image_id, "alice", 1 + k % 5)
    chosen = selection.select(store.latest(store.load_events(world.ws, 0)), 0,
                              {i: "" for i in world.image_ids}, n4=len(world.image_ids), min_raters=1)
    selection.write(world.ws, 0, chosen)
    return world


def client(ls) -> LabelStudio:
    return LabelStudio(base_url=ls.url, api_key=ls.token)


def tasks_of(ls, project_id: int) -> list[dict]:
    r = httpx.get(f"{ls.url}/api/tasks", params={"project": project_id, "page_size": 1000, "fields": "all"},
                  headers={"Authorization": f"Token {ls.token}"})
    r.raise_for_status()
    return r.json()["tasks"]


def fetch(ls, url: str) -> httpx.Response:
    """What the browser gets for a task's image URL (redirects followed: presigned S3 URLs)."""
    full = url if url.startswith("http") else ls.url + url
    return httpx.get(full, headers={"Authorization": f"Token {ls.token}"}, follow_redirects=True)


def decoded(results: list[dict], h: int, w: int) -> np.ndarray:
    """Brush results -> class map, with Label Studio's own decoder."""
    out = np.zeros((h, w), np.uint8)
    for r in results:
        assert (r["original_height"], r["original_width"]) == (h, w)
        layer = brush.decode_rle(r["value"]["rle"]).reshape(h, w, 4)[:, :, 3]
        name = r["value"]["brushlabels"][0]
        out[layer >= 128] = IGNORE if name == IGNORE_NAME else CLASSES.index(name)
    return out


def brush_results(mask: np.ndarray) -> list[dict]:
    """An annotator's brush layers, encoded with Label Studio's own encoder."""
    h, w = mask.shape
    out = []
    for value in np.unique(mask).tolist():
        if value == 0:
            continue
        name = IGNORE_NAME if value == IGNORE else CLASSES[value]
        out.append({"type": "brushlabels", "from_name": "label", "to_name": "image", "original_width": w,
                    "original_height": h, "image_rotation": 0,
                    "value": {"format": "rle", "rle": brush.mask2rle(np.where(mask == value, 255, 0).astype(np.uint8)),
                              "brushlabels": [name]}})
    return out


def edit(mask: np.ndarray) -> np.ndarray:
    edited = mask.copy()
    h, w = edited.shape
    edited[h // 2 : h // 2 + 6, 2:12] = 3
    edited[:4, :4] = 0
    return edited


def stored(world, image_id: str) -> np.ndarray:
    return decode_map_png(world.ws.get_bytes(world.ws.path("labels", f"{image_id}.png")))[0]


def check_served_and_prefilled(ls, world, project_id: int) -> dict[str, dict]:
    """Every task's image is served as exported (upright, right size); predictions decode to the target maps."""
    tasks = tasks_of(ls, project_id)
    by_id = {t["data"]["image_id"]: t for t in tasks}
    assert len(tasks) == len(by_id) == len(world.image_ids)
    for image_id, task in by_id.items():
        r = fetch(ls, task["data"]["image"])
        assert r.status_code == 200, (task["data"]["image"], r.status_code)
        h, w = world.sizes[image_id]
        with Image.open(io.BytesIO(r.content)) as img:
            assert img.size == (w, h)
        prediction = client(ls).predictions.list(task=task["id"])
        assert len(prediction) == 1
        np.testing.assert_array_equal(decoded(prediction[0].result, h, w), world.target_maps[image_id])
    return by_id


def annotate_and_pull(ls, world, by_id: dict[str, dict]) -> None:
    """Accept one prediction, repaint one, skip one, leave the rest; pull; change one; pull again."""
    sdk = client(ls)
    ids = sorted(by_id)
    accepted, repainted, skipped = ids[-1], ids[0], ids[1]  # the last is the EXIF-rotated JPEG
    h, w = world.sizes[accepted]
    sdk.annotations.create(id=by_id[accepted]["id"], result=brush_results(world.target_maps[accepted]))
    sdk.annotations.create(id=by_id[repainted]["id"], result=brush_results(edit(world.target_maps[repainted])))
    sdk.annotations.create(id=by_id[skipped]["id"], result=[], was_cancelled=True)

    first = pull(world.ws, world.config, 0, "s")
    assert first.imported == 2 and first.unchanged == 0 and not first.not_pushed
    assert set(first.unlabelled) == set(ids) - {accepted, repainted}
    np.testing.assert_array_equal(stored(world, accepted), world.target_maps[accepted])
    np.testing.assert_array_equal(stored(world, repainted), edit(world.target_maps[repainted]))
    assert not world.ws.exists(world.ws.path("labels", f"{skipped}.png"))
    rows = tables.LABELS.read(world.ws).to_pylist()
    assert sorted(r["image_id"] for r in rows) == sorted([accepted, repainted])
    assert all(r["round"] == 0 and r["source"] == "labelstudio" for r in rows)

    again = pull(world.ws, world.config, 0, "s")
    assert again.imported == 0 and again.unchanged == 2 and again.table is None
    annotation = sdk.annotations.list(id=by_id[repainted]["id"])[0]
    sdk.annotations.update(id=annotation.id, result=brush_results(world.target_maps[repainted]))
    changed = pull(world.ws, world.config, 0, "s")
    assert changed.imported == 1 and changed.unchanged == 1
    np.testing.assert_array_equal(stored(world, repainted), world.target_maps[repainted])
    assert len(tables.LABELS.read(world.ws).to_pylist()) == 3


def test_push_twice_serve_annotate_pull_pixel_exact(labelstudio, request):
    world = build(labelstudio, request.node.name)
    first = push(world.ws, world.config, 0, "s")
    assert first.created and first.added == len(world.image_ids) and first.present == 0
    second = push(world.ws, world.config, 0, "s")
    assert not second.created and second.project_id == first.project_id
    assert second.added == 0 and second.present == len(world.image_ids)
    sdk = client(labelstudio)
    storages = sdk.import_storage.local.list(project=first.project_id)
    assert len(storages) == 1
    sdk.import_storage.local.sync(id=storages[0].id)  # what a user's "Sync" press does: no duplicate
    assert len(tasks_of(labelstudio, first.project_id)) == len(world.image_ids)
    by_id = check_served_and_prefilled(labelstudio, world, first.project_id)
    assert sdk.projects.get(id=first.project_id).label_config.count("<Label ") == len(CLASSES)  # 3 classes + ignore
    annotate_and_pull(labelstudio, world, by_id)
    assert world.ws.exists(world.ws.path("exports", "labelstudio-round-0-s", PULLED))


def test_s3_workspace_is_served_by_presigned_urls(labelstudio, s3_endpoint, request):
    import s3fs

    bucket = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": s3_endpoint}).mkdir(bucket)
    storage = f'\n[storage]\nendpoint_url = "{s3_endpoint}"\nkey = "testing"\nsecret = "testing"\n'
    world = build(labelstudio, request.node.name, workspace_uri=f"s3://{bucket}/ws", extra=storage)
    first = push(world.ws, world.config, 0, "s")
    assert first.storage.startswith("S3") and first.added == len(world.image_ids)
    assert push(world.ws, world.config, 0, "s").added == 0
    storages = client(labelstudio).import_storage.s3.list(project=first.project_id)
    assert len(storages) == 1 and storages[0].presign and storages[0].bucket == bucket
    by_id = check_served_and_prefilled(labelstudio, world, first.project_id)
    task = next(iter(by_id.values()))
    # Label Studio answers the task's image with a redirect to a URL presigned for moto's endpoint
    hop = httpx.get(labelstudio.url + task["data"]["image"], headers={"Authorization": f"Token {labelstudio.token}"})
    assert hop.status_code in (302, 303, 307)
    location = hop.headers["location"]
    assert location.startswith(f"{s3_endpoint}/{bucket}/ws/exports/") and "X-Amz-Signature=" in location
    annotate_and_pull(labelstudio, world, by_id)


def test_cli_pushes_a_blank_test_set_with_the_env_token_and_lists_the_unlabelled(labelstudio, request, monkeypatch):
    world = build(labelstudio, request.node.name, token_in_config=False)
    ids = world.image_ids
    world.ws.write_parquet(tables.TESTSETS.path(world.ws, round=0),
                           pa.Table.from_pylist([{"round": 0, "image_id": ids[1]}, {"round": 0, "image_id": ids[2]}]))
    cli_state.set_config_path(world.config_path)
    runner = CliRunner()
    try:
        monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
        refused = runner.invoke(annotate_app, ["push", "--to", "labelstudio", "--round", "0", "--set", "test"])
        assert refused.exit_code != 0 and "no Label Studio token" in str(refused.exception)
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
        result = runner.invoke(annotate_app, ["push", "--to", "labelstudio", "--round", "0", "--set", "test"])
        assert result.exit_code == 0, result.output
        project_id = int(re.search(r"created project (\d+)", result.output).group(1))
        assert f"{labelstudio.url}/projects/{project_id}/data" in result.output
        world.ws.remove(world.ws.path("exports", "labelstudio-round-0-test", "madmine-export.json"))
        again = runner.invoke(annotate_app, ["push", "--to", "labelstudio", "--round", "0", "--set", "test"])
        assert again.exit_code == 0 and f"reused project {project_id}: added 0 tasks, 2 already there" in again.output
        tasks = tasks_of(labelstudio, project_id)
        assert sorted(t["data"]["image_id"] for t in tasks) == sorted(ids[1:3])
        assert len({t["data"]["madmine_export"] for t in tasks}) == 1
        assert all(t["total_predictions"] == 0 for t in tasks)  # test sets are labelled from scratch
        pulled = runner.invoke(annotate_app, ["pull", "--from", "labelstudio", "--round", "0", "--set", "test"])
        assert pulled.exit_code == 0, pulled.output
        assert "imported 0 label masks" in pulled.output and "2 image(s) still unlabelled" in pulled.output
        wrong = runner.invoke(annotate_app, ["pull", "--from", "cvat", "--round", "0", "--set", "test"])
        assert wrong.exit_code != 0 and "only labelstudio" in wrong.output
    finally:
        cli_state.set_config_path("madmine.toml")


def test_wrong_token_no_server_and_a_folder_outside_the_document_root_fail_clearly(labelstudio, request, tmp_path):
    world = build(labelstudio, request.node.name)
    bad = world.config_path.read_text().replace(labelstudio.token, "not-the-token")
    world.config_path.write_text(bad)
    with pytest.raises(AnnotationError, match="refused the token"):
        push(world.ws, load_config(world.config_path), 0, "s")
    port = labelstudio.url.rsplit(":", 1)[1]
    world.config_path.write_text(bad.replace(f":{port}", ":9").replace("not-the-token", labelstudio.token))
    with pytest.raises(AnnotationError, match="no Label Studio answers at http://127.0.0.1:9"):
        push(world.ws, load_config(world.config_path), 0, "s")
    outside = rating_world.build(tmp_path / "elsewhere", extra_toml=f'\n[labelstudio]\nurl = "{labelstudio.url}"\n'
                                 f'token = "{labelstudio.token}"\ndocument_root = "{labelstudio.document_root}"\n')
    with pytest.raises(AnnotationError, match="is not inside the document root"):
        push(outside.ws, outside.config, 0, "s")
    assert not outside.ws.exists(push_folder(outside.ws, 0, "s"))
    with pytest.raises(AnnotationError, match="nothing was pushed for round 0"):
        pull(world.ws, world.config, 0, "s")


def test_export_readme_steps_work_side_by_side_on_one_server(labelstudio, request):
    """Two file exports in one folder, served by one server without a restart, following README.md."""
    world = build(labelstudio, request.node.name)
    exports = world.root / "exports"
    export(world.ws, world.config, "labelstudio", exports / "round-0-s", 0)
    world.ws.write_parquet(tables.TESTSETS.path(world.ws, round=0),
                           pa.Table.from_pylist([{"round": 0, "image_id": world.image_ids[0]}]))
    export(world.ws, world.config, "labelstudio", exports / "round-0-test", 0, which="test")
    sdk = client(labelstudio)
    for folder in ("round-0-s", "round-0-test"):
        out = exports / folder
        readme = (out / "README.md").read_text()
        # the server in these tests serves the whole document root; the README names the folder above the export
        assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={exports}" in readme
        storage_path = re.search(r"absolute local path `([^`]+)`", readme).group(1)
        assert storage_path == str(out / "images")
        project = sdk.projects.create(title=f"readme {folder}", label_config=(out / "labeling-config.xml").read_text())
        sdk.import_storage.local.create(project=project.id, path=storage_path, use_blob_urls=True)
        tasks = json.loads((out / "tasks.json").read_text())
        # the README's document root is `exports`; this server's is the one above it: same files, longer prefix
        rel = exports.relative_to(labelstudio.document_root).as_posix()
        for t in tasks:
            t["data"]["image"] = t["data"]["image"].replace("?d=", f"?d={rel}/")
        sdk.projects.import_tasks(id=project.id, request=tasks, commit_to_project=True)
        served = tasks_of(labelstudio, project.id)
        assert len(served) == len(tasks)
        for t in served:
            assert fetch(labelstudio, t["data"]["image"]).content == (out / "images" / Path(t["data"]["image"]).name).read_bytes()
            sdk.annotations.create(id=t["id"], result=brush_results(world.target_maps[t["data"]["image_id"]]))
        raw = b"".join(sdk.projects.exports.download_sync(project.id, export_type="JSON", download_all_tasks=True))
        (out / f"project-{project.id}-at-now.json").write_bytes(raw)
        table, unfinished = import_(world.ws, world.config, "labelstudio", out / f"project-{project.id}-at-now.json")
        assert unfinished == 0 and table.num_rows == len(tasks) and set(table.column("round").to_pylist()) == {0}
        for t in tasks:
            np.testing.assert_array_equal(stored(world, t["data"]["image_id"]), world.target_maps[t["data"]["image_id"]])
    # the S project's export saved into the test export's folder: another project's export, refused
    s_file = next((exports / "round-0-s").glob("project-*.json"))
    misplaced = exports / "round-0-test" / "downloaded.json"
    misplaced.write_bytes(s_file.read_bytes())
    with pytest.raises(AnnotationError, match="another project's export"):
        import_(world.ws, world.config, "labelstudio", misplaced)


def test_labeling_page_shows_the_image_and_prediction_and_submit_round_trips(labelstudio, request, browser):
    """In chromium: log in, open a task, see the image and the target's layers, Submit; pull gives the map exactly."""
    world = build(labelstudio, request.node.name, large=True)
    result = push(world.ws, world.config, 0, "s")
    by_id = {t["data"]["image_id"]: t for t in tasks_of(labelstudio, result.project_id)}
    image_id = world.image_ids[1]
    h, w = world.sizes[image_id]
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(f"{labelstudio.url}/user/login/")
    page.fill("input[name=email]", labelstudio.user)
    page.fill("input[name=password]", labelstudio.password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/projects.*|.*/$"))
    page.goto(f"{labelstudio.url}/projects/{result.project_id}/data?task={by_id[image_id]['id']}")
    image = page.locator(f"img[src*='{image_id}']").last
    image.wait_for(state="attached", timeout=60_000)
    page.wait_for_function(f"Array.from(document.images).some(i => i.src.includes('{image_id}') && i.naturalWidth === {w})",
                           timeout=60_000)
    for name in {CLASSES[v] for v in np.unique(world.target_maps[image_id]).tolist() if 0 < v < len(CLASSES)}:
        page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
    submit = page.get_by_role("button", name="Submit")
    submit.wait_for(timeout=30_000)
    if os.environ.get("MADMINE_SCREENSHOTS"):
        page.wait_for_timeout(1500)  # the brush layers finish drawing
        page.screenshot(path=str(SCREENSHOT))
    submit.click()
    page.wait_for_function(f"""async () => (await (await fetch('/api/tasks/{by_id[image_id]['id']}')).json())
                               .total_annotations === 1""", timeout=30_000)
    pulled = pull(world.ws, world.config, 0, "s")
    assert pulled.imported == 1 and image_id not in pulled.unlabelled
    np.testing.assert_array_equal(stored(world, image_id), world.target_maps[image_id])


# ---- rough edges: a wrong URL, a token in two places, a refused storage, annotations with no brush region ----


OTHER_APP = "<!doctype html><html><head><title>Some other app</title></head><body>" + "x" * 5000 + "</body></html>"


def personal_access_token_shape() -> str:
    """A token shaped like Label Studio's personal access tokens (a JWT): the SDK refreshes it first."""

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'token_type': 'refresh', 'exp': 9999999999, 'jti': 'x'})}.sig"


def test_a_url_that_is_not_label_studios_api_is_one_short_error(labelstudio, request):
    world = build(labelstudio, request.node.name)
    text = world.config_path.read_text()
    with HtmlPage(OTHER_APP) as other:
        for token in (labelstudio.token, personal_access_token_shape()):
            world.config_path.write_text(text.replace(labelstudio.url, other.url).replace(labelstudio.token, token))
            with pytest.raises(AnnotationError) as info:
                push(world.ws, load_config(world.config_path), 0, "s")
            message = str(info.value)
            assert f"the server at {other.url} does not answer as Label Studio's API" in message, message
            assert "<" not in message and len(message) < 400, message
    world.config_path.write_text(text.replace(labelstudio.url, labelstudio.url + "/not/here"))  # Label Studio's 404 page
    with pytest.raises(AnnotationError) as info:
        push(world.ws, load_config(world.config_path), 0, "s")
    message = str(info.value)
    assert "does not answer as Label Studio's API (HTTP 404: an HTML page titled '404 | Label Studio')" in message, message
    assert "<" not in message and len(message) < 400, message
    assert not world.ws.exists(push_folder(world.ws, 0, "s"))


def test_the_environment_token_wins_and_a_refusal_names_where_it_came_from(labelstudio, request, monkeypatch):
    world = build(labelstudio, request.node.name)
    world.config_path.write_text(world.config_path.read_text().replace(labelstudio.token, "stale-token-in-the-file"))
    config = load_config(world.config_path)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(AnnotationError) as info:
        push(world.ws, config, 0, "s")
    assert "refused the token from [labelstudio] token (HTTP 401; LABEL_STUDIO_API_KEY is not set)" in str(info.value)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    assert push(world.ws, config, 0, "s").created  # the variable's valid token, not the file's stale one
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "stale-token-in-the-environment")
    with pytest.raises(AnnotationError) as info:
        pull(world.ws, config, 0, "s")
    message = str(info.value)
    assert "refused the token from LABEL_STUDIO_API_KEY (HTTP 401; [labelstudio] token is not used while it is set)" \
        in message and "into LABEL_STUDIO_API_KEY" not in message


def test_a_storage_the_server_refuses_leaves_no_project_behind(labelstudio, request, tmp_path):
    """[labelstudio] document_root holds the workspace, the server's own document root does not:
    Label Studio refuses the storage, and the project created for it is gone again."""
    outside = build(labelstudio, "outside", parent=tmp_path, document_root=tmp_path)
    sdk = client(labelstudio)
    before = [p.id for p in sdk.projects.list(page_size=100)]
    with pytest.raises(AnnotationError) as info:
        push(outside.ws, outside.config, 0, "s")
    message = str(info.value)
    assert "Label Studio refused to add a local-files storage" in message and "nothing is left in Label Studio" in message, message
    assert [p.id for p in sdk.projects.list(page_size=100)] == before


def test_pull_names_annotations_without_a_brush_region_and_imports_nothing_for_them(labelstudio, request):
    world = build(labelstudio, request.node.name)
    result = push(world.ws, world.config, 0, "s")
    by_id = {t["data"]["image_id"]: t for t in tasks_of(labelstudio, result.project_id)}
    rect, empty, good = sorted(by_id)[:3]
    h, w = world.sizes[rect]
    sdk = client(labelstudio)
    sdk.annotations.create(id=by_id[rect]["id"], result=[{
        "type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": w, "original_height": h,
        "value": {"x": 10, "y": 10, "width": 40, "height": 40, "rotation": 0, "rectanglelabels": ["bird"]}}])
    sdk.annotations.create(id=by_id[empty]["id"], result=[])
    sdk.annotations.create(id=by_id[good]["id"], result=brush_results(world.target_maps[good]))
    pulled = pull(world.ws, world.config, 0, "s")
    assert pulled.imported == 1
    named = " ".join(pulled.no_regions)
    assert len(pulled.no_regions) == 2 and f"{rect} (" in named and f"{empty} (" in named, pulled.no_regions
    assert "only rectanglelabels regions" in named and "submitted with no region" in named
    assert {rect, empty} <= set(pulled.unlabelled)
    for image_id in (rect, empty):
        assert not world.ws.exists(world.ws.path("labels", f"{image_id}.png"))
    np.testing.assert_array_equal(stored(world, good), world.target_maps[good])
