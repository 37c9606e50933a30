# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STORE := build/models
STAMP := $(VENV)/.installed

.PHONY: demo test unit integration cluster fuzz lint format models clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(STORE)/digits/v3/manifest.json: $(STAMP) rayfleet/cli/demo.py
	$(BIN)/rayfleet demo build --store $(STORE)

models: $(STORE)/digits/v3/manifest.json

# Build the demo models, serve configs/demo.yaml on 127.0.0.1:8000, send a few
# tritonclient requests, keep serving until Ctrl-C.
demo: models
	$(BIN)/rayfleet up configs/demo.yaml --smoke

lint: $(STAMP)
	$(BIN)/ruff check rayfleet tests loadtest
	$(BIN)/ruff format --check rayfleet tests loadtest
	$(BIN)/mypy
	$(BIN)/rayfleet check cluster.yaml configs/demo.yaml configs/gpu.yaml deploy/kuberay/rayservice.yaml

# No Ray. The dashboard test installs Debian's chromium when it is missing. Two
# workers, one test file each at a time (so the chromium install happens once):
# the suite is CPU-bound, and CI has two cores.
unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q -n 2 --dist loadfile

# One shared Ray instance for the whole integration suite. The slowest tests are
# listed at the end: the suite's time is what CI's budget watches.
integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration -q --durations=10

# Their own Ray, one cluster per module: `ray start --head`, `serve deploy`, a
# redeploy under load; a fake multi-node cluster from cluster.yaml (GPU nodes
# added, removed and killed under load).
cluster: $(STAMP)
	$(BIN)/python -m pytest tests/cluster -q --durations=10

test: lint unit integration cluster

# Hostile input, no Ray: the unit fuzz tests with RAYFLEET_FUZZ=long, over 10,000
# generated requests to the in-process HTTP, gRPC and admin apps. The last line
# is the count of requests and of failures.
fuzz: $(STAMP)
	RAYFLEET_FUZZ=long $(BIN)/python -m pytest tests/unit/platform/ingress -q -k fuzz

format: $(STAMP)
	$(BIN)/ruff check --fix rayfleet tests loadtest
	$(BIN)/ruff format rayfleet tests loadtest

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
