"""Checks of the deployment files in infra/, shared by the infra tests.

Every check is a function that takes the loaded files (`Infra`) and returns a list of
problems (empty: fine), so that a test can run it on the real files and on a broken copy.
Schemas come from tests/infra/schemas/ (vendored upstream files, see its README), from
kubernetes-validate (Kubernetes' built-in kinds) and from the installed Ray wheel.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.resources
import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml
from referencing import Registry, Resource

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
INFRA = REPO / "infra"
SCHEMAS = REPO / "tests" / "infra" / "schemas"
KUBERAY_VERSION = "v1.7.0"
KUBERAY_CRDS = SCHEMAS / f"kuberay-{KUBERAY_VERSION}"
RAY_SCHEMA = SCHEMAS / "ray-2.60.0" / "ray-schema.json"
# Kubernetes releases whose API the manifests must satisfy: the oldest the docs support
# (CronJob.spec.timeZone is GA from 1.27) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.27", "1.37")

# Where the image (infra/Dockerfile) keeps the repository, and the VM layout of cluster.yaml.
IMAGE_PYTHON = "python"
VM_PYTHON = "~/madmine-venv/bin/python"
# The ConfigMap every manifest mounts, and the file it is made from (docs/deploy.md).
CONFIGMAP = "madmine-config"
CONFIGMAP_KEY = "madmine.toml"
CONFIG_FILE = "infra/madmine.gpu.toml"
# madmine commands whose Ray work asks for GPUs, and how many (from the config).
TRAIN_DRIVER_CPUS = 0.01  # madmine.train.tuning.DRIVER_CPUS: each Tune trial's own driver


def load_yaml_docs(path: Path) -> list:
    return [d for d in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader) if d is not None]


@dataclass
class Infra:
    """The deployment files of one infra/ folder (the real one, or a broken copy)."""

    root: Path
    repo: Path = REPO
    manifests: dict[str, list[dict]] = field(default_factory=dict)  # "kuberay/x.yaml" -> documents
    cluster: dict = field(default_factory=dict)
    crontab: str = ""
    dockerfile: str = ""
    runtime_env: dict = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.root / Path(CONFIG_FILE).name

    def docs(self, *kinds: str):
        for rel, docs in sorted(self.manifests.items()):
            for doc in docs:
                if isinstance(doc, dict) and (not kinds or doc.get("kind") in kinds):
                    yield rel, doc

    def texts(self) -> dict[str, str]:
        """Every text file of the folder (comments included), by path relative to the repo."""
        return {
            f"infra/{p.relative_to(self.root)}": p.read_text()
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and p.suffix not in (".pyc",)
        }


def load_infra(root: Path = INFRA, repo: Path = REPO) -> Infra:
    return Infra(
        root=root,
        repo=repo,
        manifests={str(p.relative_to(root)): load_yaml_docs(p) for p in sorted((root / "kuberay").glob("*.yaml"))},
        cluster=yaml.safe_load((root / "cluster.yaml").read_text()),
        crontab=(root / "crontab").read_text(),
        dockerfile=(root / "Dockerfile").read_text(),
        runtime_env=yaml.safe_load((root / "runtime_env.yaml").read_text()),
    )


# --------------------------------------------------------------------------------------
# KubeRay custom resources against the CRDs' openAPIV3Schema, the way the API server sees them

def _structural(node, path: str = ""):
    """An openAPIV3Schema node as JSON Schema that rejects unknown fields as `kubectl apply` does.

    The API server drops (and with field validation, rejects) every field that a structural
    schema does not list, unless the node says x-kubernetes-preserve-unknown-fields.
    """
    if isinstance(node, list):
        return [_structural(n, path) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {k: _structural(v, f"{path}.{k}") for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = _structural(value, f"{path}[]" if key == "items" else path)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = _structural(value, path)
        else:
            out[key] = value
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    is_object = out.get("type") == "object" or "properties" in out
    if is_object and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def _list_type(validator, list_type, instance, schema):
    """x-kubernetes-list-type: 'set' items are unique; 'map' items are unique by their keys."""
    if not validator.is_type(instance, "array"):
        return
    if list_type == "set":
        seen = [json.dumps(i, sort_keys=True) for i in instance]
        if len(set(seen)) != len(seen):
            yield jsonschema.ValidationError(f"duplicate items in a list of type set: {instance}")
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        props = (schema.get("items") or {}).get("properties", {})
        seen = set()
        for item in instance:
            if not isinstance(item, dict):
                continue
            key = tuple(item.get(k, props.get(k, {}).get("default")) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(f"two items share the map keys {dict(zip(keys, key))}")
            seen.add(key)


def _cel(validator, rules, instance, schema):
    """CEL rules (x-kubernetes-validations) are not evaluated here: a manifest must not set such a field."""
    yield jsonschema.ValidationError(
        "sets a field that carries CEL rules, which these tests do not evaluate: "
        + "; ".join(r.get("rule", "") for r in rules)
    )


_CRDValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,  # OpenAPI v3.0 schemas follow draft 4's keywords
    {"x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel},
)


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> validator for every served version of the vendored KubeRay CRDs."""
    out = {}
    for path in sorted(KUBERAY_CRDS.glob("*.yaml")):
        for crd in load_yaml_docs(path):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served"):
                    continue
                schema = _structural(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                # The API server validates metadata as ObjectMeta itself (see metadata_problems).
                schema["properties"]["metadata"] = {"type": "object"}
                out[(f"{group}/{version['name']}", kind)] = _CRDValidator(schema)
    return out


def _errors(validator, instance) -> list[str]:
    problems = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "(top)"
        problems.append(f"{where}: {err.message}")
    return problems


def kuberay_problems(doc: dict) -> list[str]:
    """A KubeRay resource against its CRD (KubeRay KUBERAY_VERSION), unknown fields rejected."""
    validator = crd_validators().get((doc.get("apiVersion"), doc.get("kind")))
    if validator is None:
        return [f"{doc.get('apiVersion')} {doc.get('kind')} is not a served kind of KubeRay {KUBERAY_VERSION}'s CRDs"]
    return _errors(validator, doc)


# --------------------------------------------------------------------------------------
# Kubernetes' built-in kinds (kubernetes-validate's strict schemas: unknown fields rejected)

def _k8s_schema_dir(version: str):
    return importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}.0-local-strict"


@functools.cache
def _k8s_registry(version: str) -> Registry:
    definitions = json.loads((_k8s_schema_dir(version) / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()


@functools.cache
def _k8s_validator(version: str, name: str):
    schema = json.loads((_k8s_schema_dir(version) / f"{name}.json").read_text())
    return jsonschema.Draft202012Validator(schema, registry=_k8s_registry(version))


def kubernetes_problems(doc: dict) -> list[str]:
    """A built-in Kubernetes resource (e.g. batch/v1 CronJob), via kubernetes-validate, strict."""
    import kubernetes_validate

    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(p) for p in err.path) or "(top)"
            problems.append(f"Kubernetes {version}: {where}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            problems.append(f"Kubernetes {version}: {err.message}")
    return problems


def pod_template_problems(template: dict) -> list[str]:
    """A pod template embedded in a KubeRay resource, against core/v1 PodTemplateSpec (strict).

    KubeRay creates its pods from these templates: what core/v1 refuses never starts.
    """
    problems = []
    for version in KUBERNETES_VERSIONS:
        problems += [f"Kubernetes {version}: {p}" for p in _errors(_k8s_validator(version, "podtemplatespec-v1"), template)]
    return problems


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def metadata_problems(doc: dict) -> list[str]:
    """Top-level metadata against core ObjectMeta (strict), and a name the API server accepts."""
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        return ["metadata.name is missing"]
    problems = []
    for version in KUBERNETES_VERSIONS:
        validator = _k8s_validator(version, "objectmeta-meta-v1")
        problems += [f"metadata: {p}" for p in _errors(validator, meta)]
    name = meta["name"]
    if not DNS_LABEL.match(name) or len(name) > 52:  # 52: CronJob's limit, the strictest of these kinds
        problems.append(f"metadata.name {name!r} is not a DNS label of at most 52 characters")
    return problems


def ray_cluster_specs(infra: Infra):
    """(label, RayClusterSpec, entrypoint) for every Ray cluster the manifests create."""
    for rel, doc in infra.docs("RayJob", "RayCronJob", "RayCluster"):
        name = doc.get("metadata", {}).get("name")
        spec = doc.get("spec") or {}
        if doc["kind"] == "RayJob":
            yield f"{rel} (RayJob {name})", spec.get("rayClusterSpec") or {}, spec.get("entrypoint")
        elif doc["kind"] == "RayCronJob":
            template = spec.get("jobTemplate") or {}
            yield f"{rel} (RayCronJob {name})", template.get("rayClusterSpec") or {}, template.get("entrypoint")
        else:
            yield f"{rel} (RayCluster {name})", spec, None


def pod_templates(cluster_spec: dict):
    yield "headGroupSpec", (cluster_spec.get("headGroupSpec") or {}).get("template") or {}
    for group in cluster_spec.get("workerGroupSpecs") or []:
        yield f"workerGroupSpecs[{group.get('groupName')}]", group.get("template") or {}


def schema_problems(infra: Infra) -> list[str]:
    """Every manifest in infra/kuberay/ against the upstream schemas of its kind."""
    problems = []
    for rel, doc in infra.docs():
        label = f"infra/{rel} ({doc.get('kind')} {doc.get('metadata', {}).get('name')})"
        if str(doc.get("apiVersion", "")).startswith("ray.io/"):
            found = kuberay_problems(doc)
        else:
            found = kubernetes_problems(doc)
        found += metadata_problems(doc)
        problems += [f"{label}: {p}" for p in found]
    for label, spec, _ in ray_cluster_specs(infra):
        for where, template in pod_templates(spec):
            problems += [f"infra/{label}: {where}.template: {p}" for p in pod_template_problems(template)]
    return problems


# --------------------------------------------------------------------------------------
# The Ray cluster launcher file (cluster.yaml), as `ray up` reads it

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


# --------------------------------------------------------------------------------------
# Commands that run madmine: where they run, and what they name

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


# --------------------------------------------------------------------------------------
# Paths named anywhere (comments included)

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


# --------------------------------------------------------------------------------------
# GPUs: what the manifests start against what the config's Ray work asks for

def quantity(value) -> float:
    text = str(value)
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)


def _limits(template: dict) -> dict:
    containers = ((template.get("spec") or {}).get("containers")) or [{}]
    resources = containers[0].get("resources") or {}
    return {**(resources.get("requests") or {}), **(resources.get("limits") or {})}


def gpu_need(config, command: str) -> tuple[float, str]:
    """GPUs a madmine command's Ray work asks for under `config`, and why."""
    s, f = config.scoring, config.finetune
    if command in ("score", "nightly"):
        return s.actors * s.num_gpus_per_actor, f"[scoring] actors {s.actors} x num_gpus_per_actor {s.num_gpus_per_actor}"
    if command == "finetune":
        n = f.num_workers * f.concurrent_trials if f.use_gpu else 0
        return n, f"[finetune] num_workers {f.num_workers} x concurrent_trials {f.concurrent_trials} (use_gpu {f.use_gpu})"
    return 0.0, "no GPU work"


def gpu_problems(infra: Infra, calls: list[Invocation], config) -> list[str]:
    """Each Ray cluster starts exactly the GPUs that the madmine commands it runs use, and
    each GPU worker pod has room (GPUs, CPUs) for whole scoring actors or training workers."""
    problems = []
    runs: dict[str, list[str]] = {}
    for call in calls:
        script = script_of(infra, call)
        if call.cluster and call.host == "image" and script:
            runs.setdefault(call.cluster, []).append(madmine_command(script))
    for label, spec, _ in ray_cluster_specs(infra):
        autoscaling = bool(spec.get("enableInTreeAutoscaling"))
        capacity = 0.0
        for group in spec.get("workerGroupSpecs") or []:
            name = group.get("groupName")
            replicas, low, high = group.get("replicas", 0), group.get("minReplicas", 0), group.get("maxReplicas")
            if not autoscaling and (low, high) != (replicas, replicas):
                problems.append(
                    f"infra/{label}: worker group {name}: minReplicas {low} / maxReplicas {high} without "
                    f"enableInTreeAutoscaling do nothing; the group runs replicas = {replicas} pods"
                )
            if autoscaling and not (low <= replicas <= (high if high is not None else replicas)):
                problems.append(f"infra/{label}: worker group {name}: replicas {replicas} outside [{low}, {high}]")
            limits = _limits(group.get("template") or {})
            gpus, cpus = quantity(limits.get("nvidia.com/gpu", 0)), quantity(limits.get("cpu", 0))
            pods = high if autoscaling else replicas
            capacity += pods * gpus
            if gpus:
                fit = _pod_fit(config, gpus, cpus, runs.get(label, []))
                problems += [f"infra/{label}: worker group {name}: {p}" for p in fit]
        head_gpus = quantity(_limits((spec.get("headGroupSpec") or {}).get("template") or {}).get("nvidia.com/gpu", 0))
        if head_gpus:
            problems.append(f"infra/{label}: the head asks for {head_gpus:g} GPUs; it runs the driver only")
        commands = runs.get(label, [])
        if not commands:
            problems.append(f"infra/{label}: runs no madmine command (nothing submits to it)")
            continue
        needs = {c: gpu_need(config, c) for c in commands}
        most = max(n for n, _ in needs.values())
        if capacity != most:
            detail = "; ".join(f"madmine {c}: {n:g} GPUs ({why})" for c, (n, why) in needs.items())
            kind = "at most" if autoscaling else ""
            problems.append(
                f"infra/{label}: starts {kind} {capacity:g} GPUs but its work uses {most:g} ({detail})".replace("  ", " ")
            )
    return problems


def _pod_fit(config, gpus: float, cpus: float, commands: list[str]) -> list[str]:
    problems = []
    s, f = config.scoring, config.finetune
    if {"score", "nightly"} & set(commands) and s.num_gpus_per_actor > 0:
        actors = gpus / s.num_gpus_per_actor
        if actors < 1 or actors != int(actors):
            problems.append(f"{gpus:g} GPUs per pod do not hold whole scoring actors of {s.num_gpus_per_actor:g} GPUs")
        elif cpus < actors * s.num_cpus_per_actor + 1:
            problems.append(
                f"{cpus:g} CPUs per pod leave no CPU to decode images beside {int(actors)} actors of "
                f"{s.num_cpus_per_actor:g} CPUs"
            )
    if "finetune" in commands and f.use_gpu:
        if gpus < 1 or gpus != int(gpus):
            problems.append(f"{gpus:g} GPUs per pod do not hold a Ray Train worker (1 GPU each)")
        elif cpus < gpus * f.cpus_per_worker + TRAIN_DRIVER_CPUS:
            problems.append(f"{cpus:g} CPUs per pod are fewer than {int(gpus)} Ray Train workers of {f.cpus_per_worker:g} CPUs")
    return problems


# --------------------------------------------------------------------------------------
# Schedules: every nightly path runs at the same UTC time

def _fixed_time(schedule: str) -> tuple[int, int] | None:
    fields = schedule.split()
    if len(fields) != 5 or not all(f.isdigit() for f in fields[:2]) or fields[2:] != ["*", "*", "*"]:
        return None
    return int(fields[1]), int(fields[0])


def nightly_times(infra: Infra) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """UTC (hour, minute) of every nightly schedule in infra/, and why one has none."""
    times, problems = {}, []
    for rel, doc in infra.docs("RayCronJob", "CronJob"):
        spec = doc.get("spec") or {}
        label = f"infra/{rel} ({doc['kind']})"
        zone = spec.get("timeZone")
        try:
            ok = zone in ("Etc/UTC", "UTC") and zoneinfo.ZoneInfo(zone) is not None
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            ok = False
        if not ok:
            problems.append(f"{label}: timeZone {zone!r}: the schedule must be read in UTC (timeZone: Etc/UTC)")
        at = _fixed_time(str(spec.get("schedule", "")))
        if at is None:
            problems.append(f"{label}: schedule {spec.get('schedule')!r} is not once a day at a fixed time")
        else:
            times[label] = at
    entries = crontab_entries(infra.crontab)
    if len(entries) != 1:
        problems.append(f"infra/crontab: expected one active line, found {len(entries)}")
    for schedule, command in entries:
        if crontab_env(infra.crontab).get("CRON_TZ") in ("UTC", "Etc/UTC"):
            at = _fixed_time(schedule)
        else:  # cron reads the VM's local time: the command must check the UTC clock itself
            guard = re.search(r'\[\s*"?\$\(date -u \+\\?%H\\?%M\)"?\s*=\s*"?(\d\d)(\d\d)"?\s*\]\s*&&', command)
            at = (int(guard.group(1)), int(guard.group(2))) if guard and schedule.split() == ["*"] * 5 else None
            if at is None:
                problems.append(
                    "infra/crontab: the schedule is read in the VM's local time zone: set CRON_TZ=UTC, or run every "
                    'minute and start only when [ "$(date -u +\\%H\\%M)" = "HHMM" ]'
                )
        if at is not None:
            times["infra/crontab"] = at
    return times, problems


# --------------------------------------------------------------------------------------
# Dockerfile, runtime environment

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


# --------------------------------------------------------------------------------------
# Broken copies, for the tests that prove the checks can fail

class InfraCopy:
    """A copy of infra/ in a temporary folder whose files a test edits before loading it."""

    def __init__(self, tmp_path: Path):
        import shutil

        self.root = tmp_path / "infra"
        shutil.copytree(INFRA, self.root)

    def edit_text(self, rel: str, old: str, new: str) -> InfraCopy:
        path = self.root / rel
        text = path.read_text()
        assert old in text, f"{old!r} is not in {rel}"
        path.write_text(text.replace(old, new))
        return self

    def edit_yaml(self, rel: str, change, index: int = 0) -> InfraCopy:
        """Apply change(doc) to the index-th document of a YAML file (comments are lost)."""
        path = self.root / rel
        docs = load_yaml_docs(path)
        change(docs[index])
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return self

    def load(self) -> Infra:
        return load_infra(self.root, REPO)


def crontab_install_problems(infra: Infra) -> list[str]:
    """`ray up` puts infra/crontab on the head and installs it (head_setup_commands)."""
    mounts = infra.cluster.get("file_mounts") or {}
    mounted = [remote for remote, local in mounts.items() if posixpath.normpath(local) == "infra/crontab"]
    if not mounted:
        return ["infra/cluster.yaml: file_mounts does not copy infra/crontab to the VMs"]
    install = re.compile(rf"\bcrontab {re.escape(mounted[0])}\b")
    installs = [c for c in infra.cluster.get("head_setup_commands") or [] if install.search(c)]
    if not installs:
        return [f"infra/cluster.yaml: head_setup_commands does not install {mounted[0]} (crontab FILE)"]
    return []


def overlap_problems(infra: Infra) -> list[str]:
    """A nightly run never overlaps the next, and a night with nothing to score starts no GPU.

    RayCronJob has no concurrency policy: each RayJob must end (activeDeadlineSeconds, then
    its cluster's ttl) within the day, and its GPU workers must start at zero (autoscaled).
    A CronJob must forbid a second concurrent submission.
    """
    problems = []
    for rel, doc in infra.docs("RayCronJob"):
        template = (doc.get("spec") or {}).get("jobTemplate") or {}
        label = f"infra/{rel} (RayCronJob)"
        deadline, ttl = template.get("activeDeadlineSeconds"), template.get("ttlSecondsAfterFinished", 0)
        if not template.get("shutdownAfterJobFinishes"):
            problems.append(f"{label}: shutdownAfterJobFinishes is not set: every night's cluster would stay")
        if deadline is None or deadline + ttl >= 24 * 3600:
            problems.append(f"{label}: activeDeadlineSeconds {deadline} + ttl {ttl} does not end a run within the day")
        spec = template.get("rayClusterSpec") or {}
        for group in spec.get("workerGroupSpecs") or []:
            if quantity(_limits(group.get("template") or {}).get("nvidia.com/gpu", 0)) and not (
                spec.get("enableInTreeAutoscaling") and group.get("replicas", 0) == group.get("minReplicas", 0) == 0
            ):
                problems.append(f"{label}: worker group {group.get('groupName')} starts GPUs before scoring asks for them")
    for rel, doc in infra.docs("CronJob"):
        if (doc.get("spec") or {}).get("concurrencyPolicy") != "Forbid":
            problems.append(f"infra/{rel} (CronJob): concurrencyPolicy is not Forbid")
    return problems
