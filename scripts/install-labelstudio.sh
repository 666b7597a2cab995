#!/bin/sh
# The Label Studio server, for the tests that push to and pull from a real one, in its own
# virtual environment (.venv-labelstudio/): label-studio pins numpy, pyarrow and
# label-studio-sdk at versions other than madmine's, so it cannot share madmine's .venv.
# Pinned, with every dependency, by scripts/labelstudio-requirements.txt. No-op when present.
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
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet --no-deps -r "$REQS"
"$VENV/bin/pip" check >/dev/null
"$VENV/bin/label-studio" --version >/dev/null
cp "$REQS" "$STAMP"
echo "install-labelstudio: $("$VENV/bin/python" -c 'import importlib.metadata as m; print("label-studio", m.version("label-studio"))') in $VENV"
