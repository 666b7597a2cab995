"""infra/ must not drift from the code: every YAML parses, and every entry point, flag and
path it names exists in the repo."""

import re
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from madmine.cli import app

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
YAMLS = sorted(INFRA.rglob("*.yaml"))
PATH_RE = re.compile(r"(?<![\w/])(?:\./)?((?:src|sql|ray_jobs|infra)/[\w./-]*\w)")


def strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def commands() -> list[list[str]]:
    """Every command line in infra/ that runs a ray_jobs entry point, as argv lists."""
    found = []
    for path in YAMLS:
        for doc in yaml.safe_load_all(path.read_text()):
            for text in strings(doc):  # command lines written as one string
                if "ray_jobs/" in text and " " in text:
                    found.append(shlex.split(text))
            for value in _lists(doc):  # command lines written as lists
                if any("ray_jobs/" in str(v) for v in value):
                    found.append([str(v) for v in value])
    for line in (INFRA / "crontab").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            found.append(shlex.split(line.split(None, 5)[5].split(">>")[0]))
    return found


def _lists(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _lists(value)
    elif isinstance(node, list):
        if all(isinstance(v, (str, int)) for v in node):
            yield node
        for item in node:
            yield from _lists(item)


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"


def test_the_infra_covers_scoring_finetuning_and_nightly():
    kinds = {}
    for path in YAMLS:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "kind" in doc:
                kinds.setdefault(doc["kind"], []).append(path.name)
    assert {"RayJob", "RayCronJob", "CronJob"} <= set(kinds)
    scripts = {arg for argv in commands() for arg in argv if arg.startswith("ray_jobs/")}
    assert {"ray_jobs/score_job.py", "ray_jobs/finetune_job.py", "ray_jobs/nightly_job.py"} <= scripts


def test_entry_points_and_their_flags_exist():
    argvs = commands()
    assert len(argvs) >= 5
    runner = CliRunner()
    helps: dict[str, str] = {}
    for argv in argvs:
        script = next(a for a in argv if a.startswith("ray_jobs/"))
        assert (REPO / script).is_file(), f"{script} is named in infra/ but does not exist"
        command = Path(script).stem.removesuffix("_job")
        if command not in helps:
            result = runner.invoke(app, [command, "--help"], terminal_width=200)
            assert result.exit_code == 0, f"`madmine {command}` does not exist: {result.output}"
            helps[command] = result.output
        flags = [a.split("=")[0] for a in argv[argv.index(script) + 1 :] if a.startswith("--")]
        for flag in flags:
            assert flag == "--config" or flag in helps[command], f"`madmine {command}` has no {flag} (named in infra/)"


def test_paths_named_in_infra_exist():
    texts = [p.read_text() for p in YAMLS] + [(INFRA / "crontab").read_text(), (INFRA / "Dockerfile").read_text()]
    named = {m.group(1) for text in texts for m in PATH_RE.finditer(text)}
    assert "infra/Dockerfile" in named
    for rel in named:
        assert (REPO / rel).exists(), f"{rel} is named in infra/ but does not exist"
    for line in (INFRA / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY"):
            for src in line.split()[1:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
    mounts = yaml.safe_load((INFRA / "cluster.yaml").read_text())["file_mounts"]
    for src in mounts.values():
        assert (REPO / src).exists(), f"cluster.yaml mounts {src}, which does not exist"
