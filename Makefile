# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STORE := build/models
STAMP := $(VENV)/.installed

.PHONY: demo test unit integration lint format models clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(STORE)/digits/v3/manifest.json: $(STAMP) rayfleet/demo.py
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

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration -q

test: lint unit integration

format: $(STAMP)
	$(BIN)/ruff check --fix rayfleet tests loadtest
	$(BIN)/ruff format rayfleet tests loadtest

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
