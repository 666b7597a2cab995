"""Broken copies, for the tests that prove the checks can fail."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

import yaml

from deploy_checks.files import INFRA, REPO, Infra, load_infra, load_yaml_docs
from deploy_checks.gpus import _limits, quantity


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
