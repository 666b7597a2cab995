"""Commands that run madmine: where they run, and what they name."""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from deploy_checks.files import CONFIG_FILE, CONFIGMAP, CONFIGMAP_KEY, IMAGE_PYTHON, VM_PYTHON, Infra
from deploy_checks.kubernetes import ray_cluster_specs
from deploy_checks.launcher import click_options, head_dashboard


@dataclass
class Invocation:
    where: str  # file and field, for messages
    argv: list[str]  # from the python executable on
    host: str  # "image" (infra/Dockerfile) or "vm" (infra/cluster.yaml)
    cluster: str | None  # label of the Ray cluster whose head runs the driver (ray_cluster_specs)
    submit_flags: dict[str, str] = field(default_factory=dict)  # `ray job submit` options, if submitted so


def _job_submit_options() -> set[str]:
    return click_options("ray.dashboard.modules.job.cli", "submit")


def split_job_submit(words: list[str]) -> tuple[dict[str, str], list[str]] | None:
    """`ray job submit [OPTIONS] -- ENTRYPOINT...` -> (options, entrypoint argv)."""
    for i in range(len(words) - 2):
        if posixpath.basename(words[i]) == "ray" and words[i + 1 : i + 3] == ["job", "submit"]:
            rest = words[i + 3 :]
            if "--" not in rest:
                return {}, []
            cut = rest.index("--")
            options, j = {}, 0
            while j < cut:
                word = rest[j]
                if "=" in word:
                    key, value = word.split("=", 1)
                elif j + 1 < cut and not rest[j + 1].startswith("--"):
                    key, value = word, rest[j + 1]
                    j += 1
                else:
                    key, value = word, ""
                options[key] = value
                j += 1
            return options, rest[cut + 1 :]
    return None


CRON_LINE = re.compile(r"^\s*([^#\s=][^\s]*(?:\s+[^\s]+){4})\s+(.*)$")


def crontab_entries(text: str) -> list[tuple[str, str]]:
    """(schedule, command) of every active crontab line (comments and VAR=value lines skipped)."""
    entries = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or re.match(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=", line):
            continue
        match = CRON_LINE.match(line)
        if match:
            entries.append((match.group(1), match.group(2)))
    return entries


def crontab_env(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", line)
        if match:
            env[match.group(1)] = match.group(2).strip().strip("'\"")
    return env


def _shell_segments(command: str) -> list[list[str]]:
    """A crontab command split at && / || / ; into argv lists, redirections dropped."""
    command = command.replace("\\%", "%")
    segments = []
    for part in re.split(r"\s*(?:&&|\|\||;)\s*", command):
        words = shlex.split(part.split(">>")[0].split(" > ")[0])
        if words:
            segments.append(words)
    return segments


def invocations(infra: Infra) -> tuple[list[Invocation], list[str]]:
    """Every command line in infra/ that runs a madmine entry point, and problems found on the way."""
    found, problems = [], []
    for label, _, entrypoint in ray_cluster_specs(infra):
        if entrypoint is not None:
            found.append(Invocation(f"infra/{label}: entrypoint", shlex.split(entrypoint), "image", label))
    clusters = {doc["metadata"]["name"]: label for label, doc in _ray_clusters_by_name(infra)}
    for rel, doc in infra.docs("CronJob"):
        pod = (((doc.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        for container in (pod.get("spec") or {}).get("containers") or []:
            words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
            where = f"infra/{rel} (CronJob {doc['metadata']['name']}): container {container.get('name')}"
            parsed = split_job_submit(words)
            if parsed is None:
                problems.append(f"{where}: does not run `ray job submit`")
                continue
            options, argv = parsed
            host = re.sub(r"^https?://", "", options.get("--address", "")).split(":")[0]
            target = clusters.get(host.removesuffix("-head-svc")) if host.endswith("-head-svc") else None
            if target is None:
                problems.append(
                    f"{where}: submits to {options.get('--address')!r}, the head service of no RayCluster in "
                    f"infra/kuberay/ (KubeRay names it <name>-head-svc; known: {sorted(clusters)})"
                )
            found.append(Invocation(where, argv, "image", target, options))
    for schedule, command in crontab_entries(infra.crontab):
        for words in _shell_segments(command):
            parsed = split_job_submit(words)
            if parsed is not None:
                options, argv = parsed
                found.append(Invocation(f"infra/crontab: {schedule}", argv, "vm", "infra/cluster.yaml", options))
    return found, problems


def _ray_clusters_by_name(infra: Infra):
    for rel, doc in infra.docs("RayCluster"):
        yield f"{rel} (RayCluster {doc['metadata']['name']})", doc


def image_layout(dockerfile: str) -> tuple[str, dict[str, str]]:
    """(WORKDIR, {path in the image: path in the repo}) from the Dockerfile's COPY lines."""
    workdir, copies = "/", {}
    for line in dockerfile.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "WORKDIR":
            workdir = posixpath.join(workdir, words[1])
        elif words[0] == "COPY":
            args = [w for w in words[1:] if not w.startswith("--")]
            *sources, dest = args
            dest = posixpath.normpath(posixpath.join(workdir, dest))
            for src in sources:
                into_folder = len(sources) > 1 or args[-1].endswith("/")
                target = posixpath.join(dest, posixpath.basename(src)) if into_folder else dest
                copies[posixpath.normpath(target)] = src.rstrip("/")
    return workdir, copies


def map_image_path(infra: Infra, path: str) -> str | None:
    """A path inside the image -> the repository path it was copied from (None: not from the repo)."""
    _, copies = image_layout(infra.dockerfile)
    for dest, src in sorted(copies.items(), key=lambda kv: -len(kv[0])):
        if path == dest or path.startswith(dest + "/"):
            return posixpath.normpath(posixpath.join(src, path[len(dest) :].lstrip("/")))
    return None


def map_vm_path(infra: Infra, path: str) -> str | None:
    """A path on a VM of cluster.yaml -> the repository path its file_mounts copy there."""
    mounts = infra.cluster.get("file_mounts") or {}
    for remote, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        remote = remote.rstrip("/")
        if path == remote or path.startswith(remote + "/"):
            return posixpath.normpath(posixpath.join(local, path[len(remote) :].lstrip("/")))
    return None


def _head_container(cluster_spec: dict) -> dict:
    containers = (((cluster_spec.get("headGroupSpec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
    return containers[0]


def _config_on_head(infra: Infra, cluster_label: str, config: str) -> str | None:
    """Where the head of a manifest's Ray cluster has `config` from: the ConfigMap's file in the repo."""
    spec = next((s for label, s, _ in ray_cluster_specs(infra) if label == cluster_label), None)
    if spec is None:
        return None
    pod = ((spec.get("headGroupSpec") or {}).get("template") or {}).get("spec") or {}
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    for mount in _head_container(spec).get("volumeMounts") or []:
        volume = volumes.get(mount.get("name")) or {}
        config_map = volume.get("configMap") or {}
        if config_map.get("name") != CONFIGMAP or mount.get("subPath"):
            continue
        if posixpath.dirname(config) == mount.get("mountPath", "").rstrip("/") and posixpath.basename(config) == CONFIGMAP_KEY:
            return CONFIG_FILE
    return None


def entry_point_problems(infra: Infra, calls: list[Invocation]) -> list[str]:
    """Every command names the right python, an entry point that exists, and a config the driver can read."""
    problems = []
    for call in calls:
        argv = call.argv
        if len(argv) < 2:
            problems.append(f"{call.where}: no `python SCRIPT` to run ({argv})")
            continue
        python, script = argv[0], argv[1]
        expected_python = IMAGE_PYTHON if call.host == "image" else VM_PYTHON
        if python != expected_python:
            problems.append(f"{call.where}: runs {python!r}, not {expected_python!r} (the python that has madmine)")
        if call.host == "vm":
            venv = posixpath.dirname(posixpath.dirname(python))
            if not any(re.search(rf"-m venv {re.escape(venv)}\b", c) for c in infra.cluster.get("setup_commands") or []):
                problems.append(f"{call.where}: {python} is not a venv that cluster.yaml's setup_commands create")
        rel = map_image_path(infra, script) if call.host == "image" else map_vm_path(infra, script)
        if rel is None:
            where = "the image (infra/Dockerfile COPY)" if call.host == "image" else "the VMs (cluster.yaml file_mounts)"
            problems.append(f"{call.where}: {script} is not put on {where}; use an absolute path the image or VMs have")
        elif not (infra.repo / rel).is_file():
            problems.append(f"{call.where}: runs {script}, i.e. {rel}, which does not exist")
        elif not re.fullmatch(r"ray_jobs/\w+_job\.py", rel):
            problems.append(f"{call.where}: runs {rel}, not a ray_jobs/<command>_job.py entry point")
        config = _flag_value(argv[2:], "--config")
        if config is None:
            problems.append(f"{call.where}: no --config (madmine would read ./madmine.toml of an unknown folder)")
            continue
        if call.host == "vm":
            source = map_vm_path(infra, config)
            if source is None or not (infra.repo / source).is_file():
                problems.append(f"{call.where}: --config {config} is not a file that cluster.yaml's file_mounts copy to the VMs")
        elif call.cluster is not None and _config_on_head(infra, call.cluster, config) is None:
            problems.append(
                f"{call.where}: --config {config}: the head of {call.cluster} (where the driver runs) does not mount "
                f"the ConfigMap {CONFIGMAP} (key {CONFIGMAP_KEY}) there"
            )
    return problems


def _flag_value(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def script_of(infra: Infra, call: Invocation) -> str | None:
    if len(call.argv) < 2:
        return None
    return map_image_path(infra, call.argv[1]) if call.host == "image" else map_vm_path(infra, call.argv[1])


def madmine_command(script: str) -> str:
    return posixpath.basename(script).removesuffix(".py").removesuffix("_job")


HELP_FLAG = re.compile(r"^(?:--?[A-Za-z][\w-]*)")


def help_flags(text: str) -> set[str]:
    """The options a typer/click help screen lists (first column of each option row)."""
    flags = set()
    for line in text.splitlines():
        row = line.strip().strip("│|").strip().lstrip("*").strip()
        while True:
            match = HELP_FLAG.match(row)
            if not match:
                break
            flags.add(match.group(0))
            row = row[match.end() :].lstrip(" ,/")
    return flags


_HELP_RUNS: dict[tuple, tuple[int, str]] = {}

# Runs each entry point as `python SCRIPT ARGS... --help` would, one after another in one
# process (each script imports madmine once: seconds saved), with its own output and exit code.
_RUNNER = """
import contextlib, io, json, runpy, sys
results = []
for script, args in json.loads(sys.stdin.read()):
    out = io.StringIO()
    sys.argv = [script, *args, "--help"]
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException as exc:
            code, _ = 1, print(f"{type(exc).__name__}: {exc}")
    results.append([code, out.getvalue()])
print(json.dumps(results))
"""


def run_entry_points(runs: list[tuple[str, str, tuple[str, ...]]]) -> dict[tuple, tuple[int, str]]:
    """Run `python SCRIPT ARGS... --help` for each (repo, script, args), once each: the real
    entry point, its routing to a madmine command, and that command's parser."""
    todo = [key for key in dict.fromkeys(runs) if key not in _HELP_RUNS]
    for repo in {key[0] for key in todo}:
        batch = [key for key in todo if key[0] == repo]
        env = dict(os.environ, COLUMNS="200", NO_COLOR="1", RAY_USAGE_STATS_ENABLED="0")
        proc = subprocess.run(
            [sys.executable, "-c", _RUNNER],
            input=json.dumps([[str(Path(repo) / script), list(args)] for _, script, args in batch]),
            capture_output=True,
            text=True,
            env=env,
            cwd=repo,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the entry point runner failed: {proc.stderr[-2000:]}")
        for key, (code, output) in zip(batch, json.loads(proc.stdout.strip().splitlines()[-1])):
            _HELP_RUNS[key] = (code, output)
    return {key: _HELP_RUNS[key] for key in runs}


def flag_problems(infra: Infra, calls: list[Invocation]) -> list[str]:
    """Each entry point, run with the command's own arguments and --help, reaches its madmine
    command and accepts every flag (click refuses an unknown option even next to --help)."""
    problems = []
    runs = {}
    for call in calls:
        script = script_of(infra, call)
        if script is None or not (infra.repo / script).is_file():
            continue  # entry_point_problems says why
        args = list(call.argv[2:])
        config = _flag_value(args, "--config")
        if config is not None:  # the manifest's path exists only in the pod: use the repo's copy
            i = args.index("--config") if "--config" in args else next(i for i, a in enumerate(args) if a.startswith("--config="))
            args[i : i + (2 if args[i] == "--config" else 1)] = ["--config", str(infra.repo / CONFIG_FILE)]
        runs[id(call)] = (str(infra.repo), script, tuple(args))
    results = run_entry_points(list(runs.values()))
    for call in calls:
        if id(call) not in runs:
            continue
        script = runs[id(call)][1]
        code, output = results[runs[id(call)]]
        command = madmine_command(script)
        if code != 0:
            tail = " ".join(output.split())[-300:]
            problems.append(f"{call.where}: `{' '.join(call.argv)}` is refused (exit {code}): {tail}")
            continue
        if not re.search(rf"Usage: \S+ {re.escape(command)}\b", output):
            problems.append(f"{call.where}: {script} does not run `madmine {command}`")
        known = help_flags(output) | {"--config"}
        for arg in call.argv[2:]:
            if arg.startswith("-") and arg.split("=")[0] not in known:
                problems.append(f"{call.where}: `madmine {command}` has no option {arg.split('=')[0]}")
    return problems


def submit_problems(infra: Infra, calls: list[Invocation]) -> list[str]:
    """`ray job submit` options exist; the VM's submission reaches the head's job API."""
    known = _job_submit_options()
    problems = []
    for call in calls:
        for option in call.submit_flags:
            if option not in known:
                problems.append(f"{call.where}: `ray job submit` has no option {option}")
        if call.host == "vm":
            host, port = head_dashboard(infra.cluster)
            address = call.submit_flags.get("--address", "")
            if address not in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
                problems.append(f"{call.where}: submits to {address!r}; the head's job API is http://127.0.0.1:{port}")
            if host not in ("127.0.0.1", "localhost", "0.0.0.0"):
                problems.append(f"cluster.yaml: the dashboard listens on {host}, which the crontab cannot reach at 127.0.0.1")
    return problems
