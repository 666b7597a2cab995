"""The Ray cluster launcher file (cluster.yaml), as `ray up` reads it."""

from __future__ import annotations

import copy
import functools
import json
import posixpath
import re
import shlex
from pathlib import Path

import jsonschema
import yaml

from deploy_checks.files import RAY_SCHEMA
from deploy_checks.kuberay import _errors


def ray_schema() -> dict:
    return json.loads(RAY_SCHEMA.read_text())


def launcher_schema_problems(cluster: dict) -> list[str]:
    """cluster.yaml as written against ray-schema.json, then as `ray up` prepares it.

    `ray up` runs prepare_config (provider defaults; the local provider moves some fields)
    and then validate_config against the schema in the installed wheel: both must pass.
    """
    from ray.autoscaler._private.util import prepare_config, validate_config

    validator = jsonschema.validators.validator_for(ray_schema())(ray_schema())
    problems = [f"as written: {p}" for p in _errors(validator, cluster)]
    try:
        prepared = prepare_config(copy.deepcopy(cluster))
        validate_config(prepared)
    except BaseException as exc:  # cli_logger.abort raises SystemExit-like errors
        if isinstance(exc, KeyboardInterrupt):
            raise
        problems.append(f"as `ray up` prepares it: {type(exc).__name__}: {exc}")
    return problems


@functools.cache
def _module_ast(module: str):
    import ast
    import importlib.util

    return ast.parse(Path(importlib.util.find_spec(module).origin).read_text())


def _option_names(tree) -> set[str]:
    """Option names of every click.option(...) call inside an AST subtree."""
    import ast

    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "option":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.update(o for o in arg.value.split("/") if o.startswith("-"))
    return names


def click_options(module: str, function: str) -> set[str]:
    """The option names of a click command of the installed Ray, read from its source: its own
    @click.option decorators and those of the decorators that add shared options.

    (Importing ray.scripts takes seconds; the source says the same.)
    """
    import ast

    tree = _module_ast(module)
    imports = {
        alias.asname or alias.name: node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    command = functions.get(function)
    if command is None:
        raise LookupError(f"no click command {function} in {module}")
    options = set()
    for deco in command.decorator_list:
        if isinstance(deco, ast.Call):
            options |= _option_names(deco)
        elif isinstance(deco, ast.Name):  # e.g. @add_click_logging_options
            home = tree if deco.id in functions else _module_ast(imports[deco.id]) if deco.id in imports else None
            if home is not None:
                options |= _decorator_options(home, deco.id)
    return options


def _decorator_options(tree, name: str) -> set[str]:
    """Options a decorator function adds: its own click.option calls and those of the
    module-level lists it reads (CLICK_LOGGING_OPTIONS = [click.option(...), ...])."""
    import ast

    function = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if function is None:
        return set()
    read = {n.id for n in ast.walk(function) if isinstance(n, ast.Name)}
    options = _option_names(function)
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(x, ast.Name) and x.id in read for x in targets):
                options |= _option_names(node)
    return options


def _ray_start_flags() -> set[str]:
    return click_options("ray.scripts.scripts", "start")


def parse_ray_start(command: str) -> dict[str, str] | None:
    """The flags of the `ray start` in a shell command line ({'--head': '', '--port': '6379', ...})."""
    for part in re.split(r"[;&|]+", command):
        words = shlex.split(part)
        words = [w for w in words if not re.match(r"^[A-Z_]+=", w)]  # VAR=value prefixes
        if len(words) >= 2 and posixpath.basename(words[0]) == "ray" and words[1] == "start":
            flags, rest = {}, words[2:]
            i = 0
            while i < len(rest):
                word = rest[i]
                if "=" in word:
                    key, value = word.split("=", 1)
                elif i + 1 < len(rest) and not rest[i + 1].startswith("-") and word not in ("--head", "--block"):
                    key, value = word, rest[i + 1]
                    i += 1
                else:
                    key, value = word, ""
                flags[key] = value
                i += 1
            return flags
    return None


def _ray_local_defaults() -> dict:
    import ray.autoscaler

    return yaml.safe_load((Path(ray.autoscaler.__file__).parent / "local" / "defaults.yaml").read_text())


def launcher_start_problems(cluster: dict) -> list[str]:
    """The head runs the autoscaler that starts the workers; every `ray start` flag exists."""
    problems = []
    known = _ray_start_flags()
    starts = {}
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        found = [f for f in (parse_ray_start(c) for c in cluster.get(key) or []) if f is not None]
        if len(found) != 1:
            problems.append(f"{key}: expected one `ray start`, found {len(found)}")
            continue
        starts[key] = found[0]
        for flag in found[0]:
            if flag not in known:
                problems.append(f"{key}: `ray start` has no option {flag}")
    head, worker = starts.get("head_start_ray_commands"), starts.get("worker_start_ray_commands")
    if head is not None:
        defaults = parse_ray_start(_ray_local_defaults()["head_start_ray_commands"][-1])
        for flag, value in defaults.items():  # --head, --port=6379, --autoscaling-config=~/ray_bootstrap_config.yaml
            if head.get(flag) != value:
                problems.append(
                    f"head_start_ray_commands: `ray start` lacks {flag}{'=' + value if value else ''} "
                    "(Ray's own default for this provider; without the autoscaling config the "
                    "head never sets up or starts the worker VMs)"
                )
    if head is not None and worker is not None:
        port = head.get("--port", "6379")
        if worker.get("--address") != f"$RAY_HEAD_IP:{port}":
            problems.append(
                f"worker_start_ray_commands: `ray start` must join $RAY_HEAD_IP:{port}, not {worker.get('--address')}"
            )
    if "min_workers" in cluster:
        problems.append("top-level min_workers is not in Ray's schema (the local provider keeps every worker_ips VM)")
    return problems


def head_dashboard(cluster: dict) -> tuple[str, str]:
    """(host, port) that the head's dashboard (and so its job API) listens on."""
    for command in cluster.get("head_start_ray_commands") or []:
        flags = parse_ray_start(command)
        if flags is not None:
            return flags.get("--dashboard-host", "127.0.0.1"), flags.get("--dashboard-port", "8265")
    return "", ""
