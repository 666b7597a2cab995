"""Scoring runs: runs/<run_id>/run.json says what a run is (models, versions, classes, shard
size) and how far it got; its shards commit through madmine.completion's markers."""

from __future__ import annotations

from madmine.workspace import Workspace


def record_path(ws: Workspace, run_id: str) -> str:
    return ws.path("runs", run_id, "run.json")


def read_record(ws: Workspace, run_id: str) -> dict | None:
    path = record_path(ws, run_id)
    return ws.get_json(path) if ws.exists(path) else None


def write_record(ws: Workspace, record: dict) -> None:
    ws.put_json(record_path(ws, record["run_id"]), record)


def run_records(ws: Workspace) -> list[dict]:
    """Every scoring run's record, oldest first."""
    records = []
    for run_id in ws.listdir(ws.path("runs")):
        record = read_record(ws, run_id)
        if record is not None:
            records.append(record)
    return sorted(records, key=lambda r: r.get("created_at", ""))
