"""A real Label Studio server for the tests, on 127.0.0.1, in its own process group.

The server lives in its own virtual environment (.venv-labelstudio, made by
scripts/install-labelstudio.sh; label-studio pins numpy, pyarrow and label-studio-sdk at
versions other than madmine's). Each server gets its own data dir (its SQLite database is a
copy of the migrated empty one the install script made, which saves a minute of migrations),
a free port, a known user and a known API token, and serves local files below
`document_root`. `stop` ends the whole process group.

Also a script: `python tests/support/labelstudio_server.py DOCUMENT_ROOT` runs one until Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from network import free_port

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("MADMINE_LABELSTUDIO_VENV", REPO / ".venv-labelstudio"))
INSTALL = REPO / "scripts" / "install-labelstudio.sh"
TEMPLATE_DB = "template/label_studio.sqlite3"  # inside VENV: the migrated empty database
USER = "tester@example.com"
PASSWORD = "madmine-test-password"
TOKEN = "madminetesttoken0123456789abcdef01234567"
START_TIMEOUT_S = 240


@dataclass
class LabelStudio:
    url: str
    token: str
    user: str
    password: str
    document_root: Path
    data_dir: Path
    log: Path
    proc: subprocess.Popen
    started_in_s: float

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
            except ProcessLookupError:
                pass


def ensure_installed() -> Path:
    """The server's own environment; installed on first use when `make setup` has not made it."""
    if not (VENV / "bin" / "label-studio").exists() or not (VENV / ".installed").exists():
        print(f"installing Label Studio into {VENV} (scripts/install-labelstudio.sh) ...", file=sys.stderr)
        subprocess.run(["sh", str(INSTALL), str(VENV)], check=True, cwd=REPO)
    return VENV / "bin" / "label-studio"


def start(workdir: Path, document_root: Path, extra_env: dict | None = None) -> LabelStudio:
    """Start a server; returns once /health answers. Raises (after stopping it) when it does not."""
    exe = ensure_installed()
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    document_root.mkdir(parents=True, exist_ok=True)
    template = VENV / TEMPLATE_DB
    if template.exists():
        shutil.copy(template, data_dir / "label_studio.sqlite3")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "DJANGO_", "PYTHON"))}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        LABEL_STUDIO_USERNAME=USER,
        LABEL_STUDIO_PASSWORD=PASSWORD,
        LABEL_STUDIO_USER_TOKEN=TOKEN,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(document_root),
        LATEST_VERSION_CHECK="false",  # no look-up of newer releases on PyPI
        COLLECT_ANALYTICS="false",
        # the tests' S3 endpoint (moto) is on 127.0.0.1, which SSRF protection refuses by design
        SSRF_PROTECTION_ENABLED="false",
        AWS_EC2_METADATA_DISABLED="true",
        **(extra_env or {}),
    )
    log = workdir / "label-studio.log"
    cmd = [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
           "--enable-legacy-api-token"]
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=data_dir, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = LabelStudio(f"http://127.0.0.1:{port}", TOKEN, USER, PASSWORD, document_root, data_dir, log, proc, 0.0)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"label-studio exited with {proc.returncode}; see {log}:\n{log.read_text()[-3000:]}")
            if time.monotonic() - t0 > START_TIMEOUT_S:
                raise RuntimeError(f"label-studio did not answer within {START_TIMEOUT_S} s; see {log}")
            time.sleep(0.5)
    except BaseException:
        server.stop()
        raise
    server.started_in_s = time.monotonic() - t0
    return server


if __name__ == "__main__":
    import tempfile

    root = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="ls-root-")).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        ls = start(Path(tmp), root)
        print(f"Label Studio {ls.url} (user {ls.user}, password {ls.password}, token {ls.token}), "
              f"document root {root}; started in {ls.started_in_s:.1f} s; Ctrl-C stops it")
        try:
            ls.proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            ls.stop()
