"""Dockerfile, runtime environment."""

from __future__ import annotations

import contextlib
import re
import tomllib

from deploy_checks.commands import image_layout, map_image_path
from deploy_checks.files import REPO, Infra


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pins(requirements) -> dict[str, str]:
    out = {}
    for req in requirements:
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*==\s*([^\s;]+)", req)
        if match:
            out[match.group(1).lower().replace("_", "-")] = match.group(2)
    return out


def dockerfile_problems(infra: Infra) -> list[str]:
    problems = []
    deps = pins(pyproject()["project"]["dependencies"])
    base = re.search(r"^ARG BASE=rayproject/ray:([\d.]+)-py(\d)(\d+)-gpu\s*$", infra.dockerfile, re.MULTILINE)
    if base is None:
        problems.append("infra/Dockerfile: the base is not a rayproject/ray:<version>-py<python>-gpu image")
    else:
        if base.group(1) != deps.get("ray"):
            problems.append(f"infra/Dockerfile: the base image has Ray {base.group(1)}, pyproject pins {deps.get('ray')}")
        python = f"{base.group(2)}.{base.group(3)}"
        if f">={python}" not in pyproject()["project"]["requires-python"].replace(" ", ""):
            problems.append(f"infra/Dockerfile: Python {python} is not the one pyproject requires")
    for name, version in pins(re.findall(r'"([A-Za-z0-9_.-]+==[^"]+)"', infra.dockerfile)).items():
        if deps.get(name) != version:
            problems.append(f"infra/Dockerfile: installs {name}=={version}, pyproject pins {deps.get(name)}")
    for line in infra.dockerfile.splitlines():
        if line.startswith("RUN") and "index-url" in line and "TORCH_INDEX_URL" not in line:
            problems.append("infra/Dockerfile: a hard-wired package index")
    if "TORCH_INDEX_URL" in infra.dockerfile and not re.search(r"\$\{TORCH_INDEX_URL:\+--index-url", infra.dockerfile):
        problems.append("infra/Dockerfile: TORCH_INDEX_URL is declared but the torch install does not use it")
    _, copies = image_layout(infra.dockerfile)
    for rel in ("pyproject.toml", "README.md", "src", "sql", "ray_jobs"):
        if rel not in copies.values():
            problems.append(f"infra/Dockerfile: does not copy {rel} (pip install -e . and the entry points need it)")
    sql = re.search(r"MADMINE_SQL_DIR=(\S+)", infra.dockerfile)
    if sql is None or map_image_path(infra, sql.group(1)) != "sql":
        problems.append("infra/Dockerfile: MADMINE_SQL_DIR is not the image's copy of sql/")
    return problems


def runtime_env_problems(infra: Infra) -> list[str]:
    """runtime_env.yaml: fields Ray knows, paths that exist, and madmine's own pins (less Ray)."""
    from ray.runtime_env import RuntimeEnv

    env = infra.runtime_env
    problems = []
    unknown = set(env) - set(RuntimeEnv.known_fields)
    if unknown:
        problems.append(f"infra/runtime_env.yaml: fields Ray does not know: {sorted(unknown)}")
    try:
        with contextlib.chdir(infra.repo):  # its paths are relative to where `ray job submit` runs
            RuntimeEnv(**env)
    except (TypeError, ValueError) as exc:
        problems.append(f"infra/runtime_env.yaml: Ray refuses it: {exc}")
    for module in env.get("py_modules") or []:
        if not (infra.repo / module / "__init__.py").is_file():
            problems.append(f"infra/runtime_env.yaml: py_modules {module} is not a package in the repository")
    excludes = [e.strip("/") for e in env.get("excludes") or []]
    for needed in ("src", "sql", "ray_jobs"):
        if needed in excludes:
            problems.append(f"infra/runtime_env.yaml: excludes {needed}/, which the job needs")
    sql = (env.get("env_vars") or {}).get("MADMINE_SQL_DIR")
    if sql is None or not (infra.repo / sql).is_dir():
        problems.append(f"infra/runtime_env.yaml: MADMINE_SQL_DIR {sql!r} is not the working directory's sql/")
    wanted = {k: v for k, v in pins(pyproject()["project"]["dependencies"]).items() if k != "ray"}
    pip = env.get("pip") or {}
    have = pins(pip.get("packages", []) if isinstance(pip, dict) else pip)
    if have != wanted:
        problems.append(
            "infra/runtime_env.yaml: pip pins differ from pyproject's dependencies (less ray): "
            f"missing or different {sorted(set(wanted.items()) - set(have.items()))}, "
            f"extra {sorted(set(have.items()) - set(wanted.items()))}"
        )
    return problems
