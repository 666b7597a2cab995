#!/bin/sh
# The Label Studio server for the tests that push to and pull from a real one, in its own
# virtual environment (default .venv-labelstudio/): label-studio pins numpy, pyarrow and
# label-studio-sdk at versions other than madmine's, so it cannot share madmine's .venv.
# Every package pinned by scripts/labelstudio-requirements.txt. Also makes the migrated empty
# database that each test server starts from (template/label_studio.sqlite3: a minute of
# migrations saved per start). No-op when already installed from the same requirements.
set -eu
PY="${PY:-python3.11}"
VENV="${1:-.venv-labelstudio}"
HERE="$(cd "$(dirname "$0")" && pwd)"
REQS="$HERE/labelstudio-requirements.txt"
STAMP="$VENV/.installed"
if [ -f "$STAMP" ] && cmp -s "$REQS" "$STAMP"; then
    exit 0
fi
command -v "$PY" >/dev/null 2>&1 || { echo "install-labelstudio: need $PY on PATH" >&2; exit 1; }
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
VENV="$(cd "$VENV" && pwd)"
"$VENV/bin/pip" install --quiet --upgrade "pip==26.3"
"$VENV/bin/pip" install --quiet --no-deps -r "$REQS"
"$VENV/bin/pip" check
# migrate an empty database once, in a scratch data dir (never the user's ~/.local/share/label-studio)
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$VENV/template"
(cd "$SCRATCH" && env LABEL_STUDIO_BASE_DATA_DIR="$SCRATCH" LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false \
    "$VENV/bin/label-studio" version >/dev/null 2>&1)
cp "$SCRATCH/label_studio.sqlite3" "$VENV/template/label_studio.sqlite3"
cp "$REQS" "$STAMP"
echo "install-labelstudio: label-studio $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("label-studio"))') in $VENV"
