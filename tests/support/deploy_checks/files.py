"""The deployment files in infra/ loaded once (`Infra`), and where the schemas live.."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
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
