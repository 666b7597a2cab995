"""The gallery of a round's top candidates: the photo, and the target's and the competitor's
maps over it in the [classes] colours (the rating page's overlays, reused), with d and class."""

from __future__ import annotations

from dataclasses import dataclass

from madmine.config import Config
from madmine.images import ImageError
from madmine.steps.rating import render
from madmine.steps.rating.roundset import RoundError, load_round, read_image
from madmine.steps.report.plots import data_uri
from madmine.workspace import Workspace

THUMB = 320


@dataclass(frozen=True)
class Tile:
    image_id: str
    rank: int
    d: float | None
    class_name: str
    competitor: str
    direction: str
    mos: float | None
    photo: str  # data URIs
    target: str
    other: str


def top_rows(candidates: list[dict], n: int) -> list[dict]:
    """The n distinct images of highest d (ties: image_id), each with its highest-d row."""
    best: dict[str, dict] = {}
    for r in sorted(candidates, key=lambda r: (-(r.get("d") or 0.0), r["image_id"], str(r.get("competitor")))):
        best.setdefault(r["image_id"], r)
    return list(best.values())[:n]


def tiles(config: Config, ws: Workspace, round_: int, candidates: list[dict], mos: dict[str, float], n: int) -> tuple[list[Tile], list[str]]:
    """(tiles, problems): an image that cannot be shown is named, never fatal to the report."""
    try:
        rs = load_round(ws, config, round_, "mad")
    except RoundError as exc:
        return [], [str(exc)]
    out, problems = [], []
    for k, r in enumerate(top_rows(candidates, n), start=1):
        image_id = r["image_id"]
        competitor = r.get("competitor") or (rs.competitors[0] if rs.competitors else None)
        try:
            photo = render.display_jpeg(read_image(rs.uris[image_id], config.storage_options), THUMB, config.scoring.max_pixels)
            target = render.overlay_png(rs.load_map(rs.target, image_id), config.colors)
            other = render.overlay_png(rs.load_map(competitor, image_id), config.colors)
        except (RoundError, ImageError, KeyError, OSError) as exc:
            problems.append(f"{image_id}: {exc}")
            continue
        class_id = r.get("class_id")
        name = r.get("class_name") or (config.classes[class_id] if class_id is not None and class_id < config.num_classes else "-")
        out.append(
            Tile(image_id, k, r.get("d"), name, competitor, r.get("direction") or "-", mos.get(image_id),
                 data_uri(photo, "image/jpeg"), data_uri(target, "image/png"), data_uri(other, "image/png"))
        )
    return out, problems
