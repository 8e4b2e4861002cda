# Quick start: `make up` then `make test`. `make down` stops what `make up` started.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install jars up down test unit integration lint bench clean

$(STAMP): pyproject.toml
	@command -v java >/dev/null && command -v mvn >/dev/null || bash infra/install-prereqs.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

jars: install
	$(BIN)/python -c "from commands.broker import ensure_jars; print(ensure_jars())"

up: jars
	$(BIN)/stella broker start
	$(BIN)/stella init
	$(BIN)/stella service start
	$(BIN)/stella evidence ingest examples/*.json --kind other --producer examples
	@$(BIN)/stella service status --format json
	@echo
	@echo "The locker is up. Try:"
	@echo "  $(BIN)/stella evidence status"
	@echo "  curl \$$($(BIN)/stella config get Service:Host):\$$($(BIN)/stella config get Service:Port)/healthz"

down:
	-$(BIN)/stella service stop
	-$(BIN)/stella broker stop

test: jars
	$(BIN)/pytest -q

unit: install
	$(BIN)/pytest -q tests/unit tests/contract

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: jars
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
