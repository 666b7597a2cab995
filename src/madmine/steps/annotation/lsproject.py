"""Label Studio as a live partner, through label-studio-sdk: `push` a round's set to a
project (created once per round, set and workspace) with the images served by a storage,
`pull` the finished masks back through the same checks as a file import.

A push writes the images to the workspace (exports/labelstudio-round-<R>-<set>/images/) and
adds a storage that serves them: a local-files storage below the server's document root for
a local workspace, an S3 storage with presigned URLs for an s3:// one. Its regex filter
matches nothing, so pressing *Sync* in Label Studio adds no duplicate task. Tasks carry the
image id; pushing again adds only the images the project lacks. The folder's
madmine-export.json records what was pushed (sizes, round, export id, project) and
`pulled.json` which annotation of each image was imported, so pulling again imports only
what is new or changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from rich.progress import track

from madmine.config import Config
from madmine.steps.annotation import labelstudio
from madmine.steps.annotation.bundle import MANIFEST_NAME, AnnotationError, ExportItem, gather
from madmine.steps.annotation.collect import Collector
from madmine.steps.annotation.labels import commit, known_sizes
from madmine.workspace import Workspace

KEY_LINE = "madmine-project: "
NO_SYNC = "(?!)"  # a regex no file name matches: Sync adds nothing, serving is unaffected
STORAGE_TITLE = "madmine images (tasks come from madmine push; Sync adds nothing)"
PULLED = "pulled.json"
BATCH = 200


TOKEN_ENV = "LABEL_STUDIO_API_KEY"


@dataclass
class Server:
    url: str
    token: str
    timeout: float
    token_from: str = TOKEN_ENV  # where the token was found: the variable, or "[labelstudio] token"


@dataclass
class PushResult:
    project_id: int
    project_url: str
    added: int
    present: int
    created: bool
    storage: str


@dataclass
class PullResult:
    project_id: int
    project_url: str
    imported: int
    unchanged: int
    unlabelled: list[str] = field(default_factory=list)
    not_pushed: list[str] = field(default_factory=list)
    table: pa.Table | None = None
    no_regions: list[str] = field(default_factory=list)  # submitted, but with no brush or polygon region: not imported


def server(cfg: Config) -> Server:
    """URL from [labelstudio] url, else LABEL_STUDIO_URL; the token from LABEL_STUDIO_API_KEY, else
    [labelstudio] token (the variable wins: it is where the docs say the token belongs)."""
    section = cfg.labelstudio
    url = (section.url or os.environ.get("LABEL_STUDIO_URL", "")).rstrip("/")
    token, token_from = os.environ.get(TOKEN_ENV, "").strip(), TOKEN_ENV
    if not token:
        token, token_from = section.token, "[labelstudio] token"
    if not url.startswith(("http://", "https://")):
        raise AnnotationError(
            'no Label Studio URL: set [labelstudio] url = "http://127.0.0.1:8080" in the config (or LABEL_STUDIO_URL)'
        )
    if not token:
        raise AnnotationError(
            f"no Label Studio token: copy a personal access token from Label Studio's Account & Settings into {TOKEN_ENV} "
            "(or [labelstudio] token)"
        )
    return Server(url, token, section.timeout_s, token_from)


def short_body(body) -> str:
    """An error body in a few words: Label Studio's validation messages alone, an HTML page by its
    title, anything else cut short."""
    if isinstance(body, dict) and (body.get("validation_errors") or body.get("detail")):
        errors = body.get("validation_errors")
        if isinstance(errors, dict):
            flat = [m for v in errors.values() for m in (v if isinstance(v, list) else [v])]
            body = " ".join(str(m) for m in flat) or body.get("detail")
        else:
            body = str(body.get("detail"))
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    if re.search(r"<(!doctype html|html)\b", text[:500], re.IGNORECASE):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        return f"an HTML page{' titled ' + repr(' '.join(title.group(1).split())[:80]) if title else ''}"
    return text[:300] + ("..." if len(text) > 300 else "")


def _refused(srv: Server, status: int) -> AnnotationError:
    other = ("[labelstudio] token is not used while it is set" if srv.token_from == TOKEN_ENV
             else f"{TOKEN_ENV} is not set")
    return AnnotationError(
        f"Label Studio at {srv.url} refused the token from {srv.token_from} (HTTP {status}; {other}): copy a personal "
        "access token from Account & Settings there (in Label Studio 1.23 a new organisation accepts no legacy token "
        "unless an owner enables them)"
    )


def connect(srv: Server):
    """A label-studio-sdk client, checked with one request so that a wrong URL or token fails here."""
    try:
        import httpx
        from label_studio_sdk import LabelStudio
        from label_studio_sdk.core.api_error import ApiError
    except ImportError as exc:  # an optional dependency: the file export/import needs none of it
        raise AnnotationError(f"push/pull need label-studio-sdk ({exc}); pip install 'madmine[labelstudio]'") from exc
    client = LabelStudio(base_url=srv.url, api_key=srv.token, timeout=srv.timeout)
    def not_api(why: str) -> AnnotationError:
        return AnnotationError(f"the server at {srv.url} does not answer as Label Studio's API ({why}): set [labelstudio] "
                               "url to the address of Label Studio's start page, e.g. http://127.0.0.1:8080")

    try:
        me = client.users.whoami()
    except httpx.HTTPError as exc:
        raise AnnotationError(f"no Label Studio answers at {srv.url} ({exc}); start it, or fix [labelstudio] url") from exc
    except ApiError as exc:
        if exc.status_code in (401, 403):
            raise _refused(srv, exc.status_code) from exc
        if exc.status_code == 404 or (exc.status_code or 0) < 400:
            raise not_api(f"HTTP {exc.status_code}: {short_body(exc.body)}") from exc
        raise AnnotationError(f"Label Studio at {srv.url} answered HTTP {exc.status_code}: {short_body(exc.body)}") from exc
    except (ValueError, TypeError) as exc:  # an answer that is not JSON (another web server), or not the expected JSON
        raise not_api(f"its answer is not Label Studio's JSON: {type(exc).__name__}") from exc
    if getattr(me, "id", None) is None:
        raise not_api("its answer names no user")
    return client


def _api(what: str):
    """Turns the SDK's HTTP errors into one line that says what was being done."""
    from label_studio_sdk.core.api_error import ApiError

    class _Guard:
        def __enter__(self):
            return self

        def __exit__(self, kind, exc, tb):
            if isinstance(exc, ApiError):
                raise AnnotationError(f"Label Studio refused to {what} (HTTP {exc.status_code}): {short_body(exc.body)}") from exc
            return False

    return _Guard()


# ---- where a push lives ---------------------------------------------------------------------------
def folder_name(round_: int, which: str, strategy: str = "mad") -> str:
    return f"labelstudio-round-{round_}-{which}" + ("" if strategy == "mad" else f"-{strategy}")


def push_folder(ws: Workspace, round_: int, which: str, strategy: str = "mad") -> str:
    return ws.path("exports", folder_name(round_, which, strategy))


def project_key(ws: Workspace, round_: int, which: str, strategy: str = "mad") -> str:
    workspace = hashlib.sha256(ws.url(ws.root).encode()).hexdigest()[:12]
    return f"{workspace}/{folder_name(round_, which, strategy)}"


def read_record(ws: Workspace, folder: str) -> dict | None:
    path = posixpath.join(folder, MANIFEST_NAME)
    return ws.get_json(path) if ws.exists(path) else None


def project_url(srv: Server, project_id: int) -> str:
    return f"{srv.url}/projects/{project_id}/data"


def _document_root(ws: Workspace, cfg: Config) -> Path:
    return Path(cfg.labelstudio.document_root or ws.path("exports"))


class _Storage:
    """How the server reaches the pushed images, and the task URL of each."""

    def __init__(self, ws: Workspace, cfg: Config, images: str):
        self.ws, self.cfg, self.images = ws, cfg, images
        if ws.is_local:
            self.kind = "local files"
            self.prefix = labelstudio.local_files_prefix(Path(images), _document_root(ws, cfg))
        elif ws.protocol == "s3":
            self.kind = "S3 (presigned URLs)"
            self.bucket, _, key = images.partition("/")
            self.key_prefix = key.rstrip("/") + "/"
        else:
            raise AnnotationError(f"push serves images from a local or s3:// workspace, not {ws.protocol}://")

    def url(self, file: str) -> str:
        if self.ws.is_local:
            return self.prefix + file
        return f"s3://{self.bucket}/{self.key_prefix}{file}"

    def ensure(self, client, project_id: int) -> None:
        if self.ws.is_local:
            path = os.path.abspath(self.images)
            with _api("list the project's local-files storages"):
                present = client.import_storage.local.list(project=project_id)
            if any(os.path.normpath(s.path or "") == path for s in present):
                return
            with _api(f"add a local-files storage for {path} (is it below the server's LOCAL_FILES_DOCUMENT_ROOT, "
                      f"[labelstudio] document_root = {str(_document_root(self.ws, self.cfg))!r}, and is local files "
                      "serving enabled?)"):
                client.import_storage.local.create(project=project_id, path=path, title=STORAGE_TITLE,
                                                   regex_filter=NO_SYNC, use_blob_urls=True)
            return
        options = self.cfg.storage_options
        endpoint = self.cfg.labelstudio.s3_endpoint or (options.get("client_kwargs") or {}).get("endpoint_url")
        with _api("list the project's S3 storages"):
            present = client.import_storage.s3.list(project=project_id)
        if any(s.bucket == self.bucket and (s.prefix or "") == self.key_prefix for s in present):
            return
        extra = {}
        if options.get("key") and options.get("secret"):
            extra.update(aws_access_key_id=options["key"], aws_secret_access_key=options["secret"])
        region = (options.get("client_kwargs") or {}).get("region_name")
        if region:
            extra["region_name"] = region
        if endpoint:
            extra["s3endpoint"] = endpoint
        with _api(f"add an S3 storage for s3://{self.bucket}/{self.key_prefix} (endpoint {endpoint or 'AWS'})"):
            client.import_storage.s3.create(project=project_id, bucket=self.bucket, prefix=self.key_prefix,
                                            title=STORAGE_TITLE, regex_filter=NO_SYNC, use_blob_urls=True,
                                            presign=True, presign_ttl=self.cfg.labelstudio.presign_ttl,
                                            recursive_scan=False, **extra)


def _find_project(client, key: str, record: dict | None):
    from label_studio_sdk.core.api_error import ApiError

    if record and record.get("project_id"):
        try:
            project = client.projects.get(id=int(record["project_id"]))
            if KEY_LINE + key in (project.description or ""):
                return project
        except ApiError as exc:
            if exc.status_code != 404:
                raise
    with _api("list projects"):
        for project in client.projects.list(page_size=100):
            if KEY_LINE + key in (project.description or ""):
                return project
    return None


def _existing_tasks(client, project_id: int) -> tuple[dict[str, list[int]], set[str]]:
    """(image_id -> task ids already in the project, the madmine export ids the tasks name)."""
    found: dict[str, list[int]] = {}
    exports: set[str] = set()
    with _api("list the project's tasks"):
        for t in client.tasks.list(project=project_id, fields="task_only", page_size=500):
            data = t.data or {}
            if data.get("image_id"):
                found.setdefault(data["image_id"], []).append(t.id)
            if data.get("madmine_export"):
                exports.add(data["madmine_export"])
    return found, exports


def _write_images(ws: Workspace, images: str, items: list[ExportItem]) -> None:
    missing = [i for i in items if not ws.exists(posixpath.join(images, i.file))]
    for item in track(missing, description=f"write {len(missing)} images"):
        ws.put_bytes(posixpath.join(images, item.file), item.data)


def push(ws: Workspace, cfg: Config, round_: int, which: str = "s", strategy: str = "mad",
         prefill: bool | None = None) -> PushResult:
    """Create or reuse the project of (round, set), serve its images, add the tasks it lacks."""
    srv = server(cfg)
    folder = push_folder(ws, round_, which, strategy)
    images = posixpath.join(folder, "images")
    storage = _Storage(ws, cfg, images)  # a local folder outside the document root fails here, before any work
    prefill = (which == "s") if prefill is None else prefill  # test sets blank: a pre-fill anchors the annotator
    items, meta = gather(ws, cfg, round_, which, strategy, cfg.target.name if prefill else None)
    if not items:
        raise AnnotationError(f"the {which!r} set of round {round_} is empty; nothing to push")
    client = connect(srv)
    record = read_record(ws, folder)
    if record and record.get("export_id"):
        meta["export_id"] = record["export_id"]  # every task of the project names one export
    key = project_key(ws, round_, which, strategy)
    _write_images(ws, images, items)

    project = _find_project(client, key, record)
    created = project is None
    config_xml = labelstudio.labeling_config(cfg)
    if created:
        title = f"madmine round {round_} {'S' if which == 's' else which}" + ("" if strategy == "mad" else f" {strategy}")
        description = f"madmine: round {round_}, set {which!r} of {ws.url(ws.root)}\n{KEY_LINE}{key}"
        with _api("create the project"):
            project = client.projects.create(title=title, description=description, label_config=config_xml)
    elif project.label_config != config_xml:
        with _api("update the project's labelling config to the config's classes"):
            client.projects.update(id=project.id, label_config=config_xml)
    try:
        storage.ensure(client, project.id)
    except AnnotationError as exc:
        if not created:
            raise
        _delete_project(client, project.id)  # Label Studio checks a storage only for a project: leave none behind
        raise AnnotationError(f"{exc}; the project created for it was deleted again: nothing is left in Label Studio") from exc

    existing, exports = _existing_tasks(client, project.id)
    if not (record and record.get("export_id")) and len(exports) == 1:
        meta["export_id"] = exports.pop()  # the record was lost: the tasks already there name the export
    new = [labelstudio.task(i, meta, cfg, storage.url(i.file), prefill) for i in items if i.image_id not in existing]
    for start in track(range(0, len(new), BATCH), description=f"import {len(new)} tasks") if new else ():
        with _api("import the tasks"):
            client.projects.import_tasks(id=project.id, request=new[start : start + BATCH], commit_to_project=True)

    known = {i["image_id"]: i for i in (record or {}).get("images", [])}
    known.update({i["image_id"]: i for i in meta["images"]})
    ws.put_json(posixpath.join(folder, MANIFEST_NAME), {
        **meta, "format": "labelstudio", "images": list(known.values()), "prefill": prefill,
        "server": srv.url, "project_id": project.id, "project_key": key, "storage": storage.kind,
    })
    return PushResult(project.id, project_url(srv, project.id), len(new), len(items) - len(new), created, storage.kind)


def _delete_project(client, project_id: int) -> None:
    from label_studio_sdk.core.api_error import ApiError

    try:
        client.projects.delete(id=project_id)
    except ApiError:  # the error being reported matters more; the empty project is named in it
        pass


# ---- pull ------------------------------------------------------------------------------------
def _annotation_key(annotation: dict) -> str:
    return f"{annotation.get('id')}@{annotation.get('updated_at') or annotation.get('created_at')}"


def pull(ws: Workspace, cfg: Config, round_: int, which: str = "s", strategy: str = "mad",
         force: bool = False, require_all: bool = False) -> PullResult:
    """Import every finished annotation not imported before; all or nothing, as a file import."""
    srv = server(cfg)
    folder = push_folder(ws, round_, which, strategy)
    record = read_record(ws, folder)
    if record is None:
        raise AnnotationError(
            f"nothing was pushed for round {round_}, set {which!r} ({posixpath.join(folder, MANIFEST_NAME)} is missing); "
            "run `madmine annotate push --to labelstudio` first"
        )
    client = connect(srv)
    project = _find_project(client, record["project_key"], record)
    if project is None:
        raise AnnotationError(
            f"Label Studio at {srv.url} has no project for round {round_}, set {which!r} any more "
            f"(it was project {record.get('project_id')}); push again to recreate it"
        )
    with _api("export the project as JSON"):
        raw = b"".join(client.projects.exports.download_sync(project.id, export_type="JSON", download_all_tasks=True))
    tasks = json.loads(raw)
    name = f"project {project.id}"
    sizes = known_sizes(ws, record)
    labelstudio.check_origin(name, tasks, record, sizes)
    collector = Collector(cfg.classes, sizes, "the push record")
    if tuple(record.get("classes", cfg.classes)) != cfg.classes:
        collector.problem(f"the project was pushed for classes {record['classes']}, the config has {list(cfg.classes)}")

    pulled_path = posixpath.join(folder, PULLED)
    pulled = ws.get_json(pulled_path) if ws.exists(pulled_path) else {}
    unchanged = []

    def skip(task: dict, annotation: dict) -> bool:
        image_id = (task.get("data") or {}).get("image_id")
        if not force and image_id and pulled.get(image_id) == _annotation_key(annotation):
            unchanged.append(image_id)
            return True
        return False

    unfinished = labelstudio.read_tasks(name, tasks, collector, skip)
    unlabelled = sorted({(t.get("data") or {}).get("image_id") or str(t.get("id")) for t in unfinished})
    if require_all and unlabelled:
        for image_id in unlabelled:
            collector.problem(f"image {image_id} has no finished annotation in {name} (unlabelled; --require-all)")
    in_project = {(t.get("data") or {}).get("image_id") for t in tasks}
    not_pushed = sorted(set(sizes) - in_project)

    table = None
    if collector.masks or collector.problems:
        table = commit(ws, collector, "labelstudio", round_)
        done = {(t.get("data") or {}).get("image_id"): labelstudio.finished(t) for t in tasks}
        pulled.update({i: _annotation_key(done[i]) for i in collector.masks if done.get(i)})
        ws.put_json(pulled_path, pulled)
    return PullResult(project.id, project_url(srv, project.id), len(collector.masks), len(unchanged),
                      unlabelled, not_pushed, table, [f"{image_id} ({why})" for image_id, why in collector.unpainted])
