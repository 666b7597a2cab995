"""Kubernetes' built-in kinds (kubernetes-validate's strict schemas: unknown fields rejected)."""

from __future__ import annotations

import functools
import importlib.resources
import json
import re

import jsonschema
from referencing import Registry, Resource

from deploy_checks.files import KUBERNETES_VERSIONS, Infra
from deploy_checks.kuberay import _errors, kuberay_problems


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
