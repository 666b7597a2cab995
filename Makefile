# Every target sets itself up: a fresh machine needs nothing but python3.11 and make.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Label Studio's server, for the tests against a real one, in its own environment: its pins
# (numpy, pyarrow, label-studio-sdk) clash with madmine's.
LS_VENV := .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP) $(LS_STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel from the local find-links; an unpinned resolve pulls CUDA.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test]"
	# Debian's chromium for the browser tests and page screenshots (no-op when present).
	sh scripts/install-browser.sh
	touch $(STAMP)

$(LS_STAMP): scripts/labelstudio-requirements.txt scripts/install-labelstudio.sh
	PY=$(PY) sh scripts/install-labelstudio.sh $(LS_VENV)
	touch $(LS_STAMP)

demo: $(STAMP)
	RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 $(BIN)/madmine demo --workdir demo-work

# Both test targets run on two workers (pytest-xdist), a test file to a worker: a module's fixtures
# (the demo's run) are built once, and each worker that meets a slow test starts its own Ray cluster
# on 127.0.0.1.
test: $(STAMP) $(LS_STAMP)
	RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25 tests

# For developers: everything but the slow marks (Ray cluster, Ray Train, several nodes, Label Studio,
# the browser, the demo); see tests/conftest.py.
test-fast: $(STAMP)
	RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=10 -m "not slow" tests

# Benchmarks print their figures; each runs as a module of the bench package.
bench: $(STAMP)
	RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 $(BIN)/python -m bench.score
	RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 $(BIN)/python -m bench.selection
	$(BIN)/python -m bench.sql
	RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 $(BIN)/python -m bench.scale
	RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 $(BIN)/madmine demo --workdir bench-work/repair --rounds 1 > /dev/null
	RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 $(BIN)/python -m bench.finetune_repair --workdir bench-work/repair
	$(BIN)/python -m bench.shared_failures --workdir bench-work/repair

clean:
	rm -rf $(VENV) $(LS_VENV) demo-work .pytest_cache
