# payrecon — `make run` starts the whole local stack, `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test unit bench fuzz chaos protos lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install  ## the whole stack in the foreground; Ctrl-C stops it
	$(BIN)/payrecon run

test: install  ## unit, integration and e2e tests (starts what it needs)
	$(BIN)/python -m pytest -q

unit: install
	$(BIN)/python -m pytest -q tests/unit

bench: install  ## figures written to tests/bench/RESULTS.md (never asserted); BENCH_ARGS="--only http,open-loop --duration 15"
	$(BIN)/python -m tests.bench.run $(BENCH_ARGS)

fuzz: install  ## >= 10,000 generated REST requests through Envoy on loopback; prints counts, fails on a 5xx
	$(BIN)/python -m tests.fuzz.run

chaos: install  ## load under crashes and restarts, then the invariants table (exit 1 if one fails); CHAOS_ARGS="--duration 300"
	$(BIN)/python -m tests.chaos.run $(CHAOS_ARGS)

protos: install  ## regenerate contract code, .pyi stubs, gateway/descriptor.pb, its routes and OpenAPI
	$(BIN)/python protos/generate.py
	$(BIN)/python -m services.devstack.envoy
	$(BIN)/python gateway/openapi.py

lint: install  ## ruff (lint + format), mypy --strict on services/, import contracts (pyproject.toml)
	$(BIN)/ruff check services tests protos/generate.py gateway/openapi.py
	$(BIN)/ruff format --check services tests protos/generate.py gateway/openapi.py
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
