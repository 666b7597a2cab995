"""infra/ against the real upstream schemas: KubeRay's CRDs (v1.7.0, vendored), Kubernetes'
built-in kinds (kubernetes-validate, strict) and Ray's cluster-launcher schema and config
preparation (the installed wheel). Each check is also shown to fail on a broken copy."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from deploy_checks.copies import InfraCopy
from deploy_checks.files import KUBERAY_CRDS, RAY_SCHEMA, SCHEMAS, load_infra
from deploy_checks.kuberay import crd_validators
from deploy_checks.kubernetes import schema_problems
from deploy_checks.launcher import launcher_schema_problems


@pytest.fixture(scope="module")
def infra():
    return load_infra()


def test_the_vendored_schemas_are_the_upstream_files():
    listed = dict(
        reversed(line.split())
        for line in (SCHEMAS / "README.md").read_text().split("```")[1].strip().splitlines()
    )
    files = sorted(str(p.relative_to(SCHEMAS)) for p in [*KUBERAY_CRDS.glob("*.yaml"), RAY_SCHEMA])
    assert sorted(listed) == files
    for rel, digest in listed.items():
        assert hashlib.sha256((SCHEMAS / rel).read_bytes()).hexdigest() == digest, f"{rel} was changed"
    assert {kind for _, kind in crd_validators()} == {"RayCluster", "RayJob", "RayCronJob"}


def test_the_vendored_ray_schema_is_the_installed_wheels():
    import ray
    import ray.autoscaler

    wheel = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    assert ray.__version__ == "2.60.0", "update tests/infra/schemas/ray-* with the new Ray release"
    assert json.loads(wheel.read_text()) == json.loads(RAY_SCHEMA.read_text())


def test_the_manifests_cover_every_deployment(infra):
    kinds = {doc["kind"] for _, doc in infra.docs()}
    assert kinds == {"RayJob", "RayCronJob", "RayCluster", "CronJob"}
    assert len(list(infra.docs())) == len(infra.manifests) == 5  # one resource per file


def test_every_manifest_is_valid_against_the_upstream_schemas(infra):
    assert schema_problems(infra) == []


def test_cluster_yaml_is_valid_as_written_and_as_ray_up_prepares_it(infra):
    assert launcher_schema_problems(infra.cluster) == []


def _set(path: str, value):
    """change(doc): set a dotted path (list items by [i]) to value."""

    def change(doc):
        node = doc
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
        for part in parts[:-1]:
            node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
        last = parts[-1]
        if last.startswith("["):
            node[int(last[1:-1])] = value
        else:
            node[last] = value

    return change


BROKEN_MANIFESTS = {
    # the field the issue found: not in any KubeRay version
    "raycronjob-concurrencyPolicy": ("kuberay/raycronjob-nightly.yaml", "spec.concurrencyPolicy", "Forbid", "concurrencyPolicy"),
    "rayjob-unknown-field": ("kuberay/rayjob-score.yaml", "spec.rayClusterSpec.workerGroupSpecs[0].gpus", 1, "gpus"),
    "raycluster-pod-typo": (
        "kuberay/raycluster.yaml",
        "spec.workerGroupSpecs[0].template.spec.containers[0].resource",
        {"limits": {"cpu": "1"}},
        "resource",
    ),
    "rayjob-bad-quantity": (
        "kuberay/rayjob-finetune.yaml",
        "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].resources.limits.memory",
        "16 gigs",
        "memory",
    ),
    "rayjob-bad-enum": ("kuberay/rayjob-score.yaml", "spec.rayClusterSpec.autoscalerOptions", {"upscalingMode": "Fast"}, "Fast"),
    "rayjob-cel-field": ("kuberay/rayjob-score.yaml", "spec.managedBy", "someone", "CEL"),
    "duplicate-env-names": (
        "kuberay/raycluster.yaml",
        "spec.headGroupSpec.template.spec.containers[0].env",
        [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
        "map keys",
    ),
    "cronjob-unknown-field": (
        "kuberay/cronjob-nightly.yaml",
        "spec.jobTemplate.spec.template.spec.restartPolicyy",
        "Never",
        "restartPolicyy",
    ),
    "cronjob-bad-type": ("kuberay/cronjob-nightly.yaml", "spec.startingDeadlineSeconds", "an hour", "startingDeadlineSeconds"),
    "metadata-unknown-field": ("kuberay/rayjob-score.yaml", "metadata.label", {"a": "b"}, "label"),
    "unserved-version": ("kuberay/raycronjob-nightly.yaml", "apiVersion", "ray.io/v1alpha1", "not a served kind"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_MANIFESTS))
def test_a_broken_manifest_fails_the_schema_check(tmp_path, case):
    rel, path, value, expected = BROKEN_MANIFESTS[case]
    infra = InfraCopy(tmp_path).edit_yaml(rel, _set(path, value)).load()
    problems = schema_problems(infra)
    assert problems, f"{case}: the schema check accepted {path} = {value!r}"
    assert any(rel in p and expected in p for p in problems), problems


def test_a_pod_template_missing_a_required_field_fails(tmp_path):
    def drop_name(doc):
        del doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["name"]

    problems = schema_problems(InfraCopy(tmp_path).edit_yaml("kuberay/rayjob-finetune.yaml", drop_name).load())
    assert any("'name' is a required property" in p and "PodTemplateSpec" not in p for p in problems), problems
    assert any("Kubernetes 1.37" in p and "workerGroupSpecs[gpu].template" in p for p in problems), problems


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("max_workers: 2 ", "min_workers: 2\nmax_workers: 2 ", "min_workers"),  # the top-level min_workers
        ("setup_commands:", "setup_comands:", "setup_comands"),
        ("  ssh_user: madmine", "  ssh_usr: madmine", "ssh_usr"),
    ],
)
def test_a_broken_cluster_yaml_fails_the_schema_check(tmp_path, old, new, expected):
    infra = InfraCopy(tmp_path).edit_text("cluster.yaml", old, new).load()
    problems = launcher_schema_problems(infra.cluster)
    assert any("as written" in p and expected in p for p in problems), problems
