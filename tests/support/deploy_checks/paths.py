"""Paths named anywhere (comments included)."""

from __future__ import annotations

import re
from pathlib import Path

from deploy_checks.commands import image_layout
from deploy_checks.files import Infra

PATH_MENTION = re.compile(
    r"(?:(?<=/opt/madmine/)|(?<=~/madmine/)|(?<![\w/.~-]))"
    r"((?:src|sql|ray_jobs|infra|docs)/[\w./-]*\w)"
)


def mentioned_path_problems(texts: dict[str, str], repo: Path) -> list[str]:
    problems = []
    for name, text in texts.items():
        for match in PATH_MENTION.finditer(text):
            rel = match.group(1)
            if not (repo / rel).exists():
                problems.append(f"{name} names {rel}, which does not exist")
    return problems


def mount_problems(infra: Infra) -> list[str]:
    """What the Dockerfile copies and what cluster.yaml mounts exists in the repository."""
    problems = []
    _, copies = image_layout(infra.dockerfile)
    for src in copies.values():
        if not (infra.repo / src).exists():
            problems.append(f"infra/Dockerfile copies {src}, which does not exist")
    for remote, local in (infra.cluster.get("file_mounts") or {}).items():
        if not (infra.repo / local).exists():
            problems.append(f"infra/cluster.yaml mounts {local} at {remote}; it does not exist")
    return problems
