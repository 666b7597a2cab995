"""The images of a round that raters see, and the prediction maps shown with them.

Everything is looked up by image_id among the round's candidates: a request names an id,
never a path, so nothing a browser sends can reach another file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from madmine import tables
from madmine.config import Config
from madmine.errors import MadmineError
from madmine.steps.score.map_store import MapStore
from madmine.steps.score.runs import run_records
from madmine.steps.score.shards import shards_of
from madmine.untrusted import DEFAULT_MAX_BYTES, ImageError, read_bytes
from madmine.workspace import Workspace

COMPLETE = "complete"


class RoundError(MadmineError):
    """The round's candidates, run record or maps cannot be found."""


@dataclass(frozen=True)
class RoundSet:
    """The candidate images M of one round, and the model versions that predicted them; or another
    named set of images to rate (a MAD competition's: `round` is then its name, compete-<id>)."""

    round: int | str
    strategy: str
    image_ids: tuple[str, ...]
    uris: dict[str, str]
    target: str
    versions: dict[str, str]
    competitors: tuple[str, ...]
    run_id: str
    packs: dict[str, str] = field(default_factory=dict)  # image_id -> the map-store pack (scoring shard) of its maps
    store: MapStore | None = field(default=None, compare=False, repr=False)
    shard_size: int = 1024  # the run's, to find the pack of an image that is not a candidate
    loader: Callable[[str, str], np.ndarray] | None = field(default=None, compare=False, repr=False)  # named sets

    def load_map(self, model: str, image_id: str) -> np.ndarray:
        """The model's prediction map of an image of the run (uint8 class ids, 255 ignore), from the map store."""
        if self.loader is not None:
            return self.loader(model, image_id)
        if image_id not in self.packs and self.store is not None:
            self.packs.update(shards_of(self.store.ws, [image_id], self.shard_size))
        found = self.store.get(model, self.versions[model], image_id, self.packs.get(image_id, "")) if self.store else None
        if found is None:
            raise RoundError(f"no stored map of {model} version {self.versions.get(model)} for image {image_id}: "
                             "run `madmine score`")
        return found.map

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.uris

    def __len__(self) -> int:
        return len(self.image_ids)


def latest_round(ws: Workspace, strategy: str = "mad") -> int:
    """The highest round that has candidates: the default for every `rate` command."""
    rounds = tables.CANDIDATES.rounds(ws, strategy=strategy)
    if not rounds:
        raise RoundError(
            f"no candidates in {ws.path(tables.CANDIDATES.folder)} for strategy {strategy!r}; "
            "run `madmine select --round R` first, or pass --round"
        )
    return max(rounds)


def _scoring_run(ws: Workspace, run_ids: list[str]) -> dict:
    """The run whose versions the round shows: the candidates' own run, else the newest complete one."""
    if run_ids:
        paths = [ws.path("runs", run_id, "run.json") for run_id in run_ids]
        named = sorted((ws.get_json(p) for p in paths if ws.exists(p)), key=lambda r: r.get("created_at", ""))
        if not named:
            raise RoundError(f"the candidates name scoring run(s) {run_ids} but no runs/<run_id>/run.json exists")
        return named[-1]
    records = run_records(ws)
    complete = [r for r in records if r.get("status") == COMPLETE]
    if not complete:
        raise RoundError(
            f"no complete scoring run under {ws.path('runs')} (run.json with status {COMPLETE!r}); "
            "run `madmine score` first"
        )
    return complete[-1]


def load_round(ws: Workspace, cfg: Config, round_: int, strategy: str = "mad") -> RoundSet:
    path = tables.CANDIDATES.path(ws, round=round_, strategy=strategy)
    if not ws.exists(path):
        raise RoundError(f"no candidates for round {round_} ({path}); run `madmine select --round {round_}` first")
    table = ws.read_parquet([path])
    missing = {"image_id", "uri"} - set(table.column_names)
    if missing:
        raise RoundError(f"{path} lacks column(s) {sorted(missing)}; it is not a candidates table")
    rows = table.to_pylist()
    if "round" in table.column_names:
        rows = [r for r in rows if r["round"] is None or int(r["round"]) == round_]
    uris: dict[str, str] = {}
    for row in rows:
        uris.setdefault(row["image_id"], row["uri"])
    run_ids = sorted({r["run_id"] for r in rows if r.get("run_id")}) if "run_id" in table.column_names else []
    run = _scoring_run(ws, run_ids)
    versions = {m["name"]: m["version"] for m in run.get("models", []) if m.get("version")}
    target = cfg.target.name
    if target not in versions:
        raise RoundError(f"scoring run {run.get('run_id')!r} has no version of the target {target!r}")
    competitors = tuple(m.name for m in cfg.competitors if m.name in versions)
    packs = {r["image_id"]: r["shard"] for r in rows if r.get("shard")}
    shard_size = int(run.get("shard_size") or 1024)
    if len(packs) < len(uris):  # candidates written without shards: find them in the manifest
        packs.update(shards_of(ws, [i for i in uris if i not in packs], shard_size))
    return RoundSet(
        round=round_,
        strategy=strategy,
        image_ids=tuple(sorted(uris)),
        uris=uris,
        target=target,
        versions=versions,
        competitors=competitors,
        run_id=str(run.get("run_id", "")),
        packs=packs,
        store=MapStore(ws),
        shard_size=shard_size,
    )


def read_image(uri: str, storage_options: dict | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The original bytes of an image from the manifest (local path or object store URI),
    through the untrusted-bytes boundary: a regular file of at most max_bytes, else ImageError."""
    try:
        return read_bytes(uri, storage_options, max_bytes=max_bytes)
    except ImageError as exc:
        if exc.reason == "file not found":
            raise RoundError(f"image {uri} is gone from where it was ingested") from exc
        raise
