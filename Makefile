# Quick start: `make up` then `make test`. `make down` stops what `make up` started.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The lock file: every package, with its hashes, for Python 3.11 on linux x86_64 (`make lock` writes it).
LOCK := requirements.txt
# Locked too: the installer, and the build backend that the editable install uses without isolation.
BUILD_TOOLS := pip 'setuptools>=70.1'
UV_VERSION := 0.13.9
# sha256 of "registry.example.com/shop/api:1.4.2", the image the sample evidence is about.
EXAMPLE_SUBJECT := sha256:d20141dbeaeb24ed0d7bbc855d6b7f7c4bfce46b85d8b851f36ad8a47db7b7d1

.PHONY: install lock lock-upgrade jars promtool up cluster down test test-faults unit fuzz lint bench bench-million bench-scale bench-verify bench-recovery bench-retention bench-offline bench-serve clean

$(STAMP): pyproject.toml $(LOCK)
	@command -v java >/dev/null && command -v mvn >/dev/null || bash infra/install-prereqs.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

# Re-resolve after a change to pyproject.toml's dependencies, keeping every pin that still fits;
# `make lock-upgrade` moves every package to the newest version pyproject.toml allows.
lock:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/pip install -q uv==$(UV_VERSION)
	printf '%s\n' $(BUILD_TOOLS) | $(BIN)/uv pip compile pyproject.toml - --extra dev $(LOCK_FLAGS) \
		--generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
		--custom-compile-command "make lock" --quiet -o $(LOCK)

lock-upgrade:
	$(MAKE) lock LOCK_FLAGS=--upgrade

jars: install
	$(BIN)/python -c "from commands.broker import ensure_jars; print(ensure_jars())"

# promtool for the alert rules' tests (tests/unit/test_alerts.py), at .tools/bin/promtool.
promtool:
	bash infra/install-promtool.sh

up: jars promtool
	$(BIN)/stella broker start
	$(BIN)/stella init
	$(BIN)/stella service start
	$(BIN)/stella evidence ingest examples/evidence/api.cdx.json --kind sbom --subject $(EXAMPLE_SUBJECT) --producer examples
	$(BIN)/stella evidence ingest examples/evidence/api.openvex.json --kind vex --subject $(EXAMPLE_SUBJECT) --producer examples
	$(BIN)/stella evidence ingest examples/evidence/api.provenance.intoto.json --kind attestation --subject $(EXAMPLE_SUBJECT) --producer examples
	$(BIN)/stella evidence ingest examples/evidence/api.scan.sarif.json --kind scan --subject $(EXAMPLE_SUBJECT) --producer examples
	@$(BIN)/stella service status --format json
	@echo
	@echo "The locker is up. Try:"
	@echo "  $(BIN)/stella evidence status"
	@echo "  curl -H \"Authorization: Bearer \$$(cat $$($(BIN)/stella config get Service:TokenFile))\" http://$$($(BIN)/stella config get Service:Host):$$($(BIN)/stella config get Service:Port)/artifacts?subject=$(EXAMPLE_SUBJECT)"

# A three-broker cluster on loopback (ports Broker:Port, +2, +4), and the locker pointed at it;
# every topic `stella init` makes then has 3 replicas, acknowledged on 2. `make down` stops it.
cluster: jars
	$(BIN)/stella broker start --nodes 3
	$(BIN)/stella config set Kafka:Bootstrap "$$($(BIN)/stella broker status --format json | $(BIN)/python -c 'import json, sys; print(json.load(sys.stdin)["bootstrap"])')"
	$(BIN)/stella init

down:
	-$(BIN)/stella service stop
	-$(BIN)/stella broker stop

test: jars promtool
	$(BIN)/pytest -q

# The fault suite (tests/faults) at full strength: 20 kill -9s in each random-instant trial (3 and 2
# in `make test`), 30 s outages (5 s), and the S3 outage; writes the table of what each fault did to
# tests/faults/REPORT.md.
test-faults: jars
	STELLA_TEST_FAULTS=full STELLA_TEST_KILLS=20 STELLA_TEST_ANCHOR_KILLS=20 STELLA_TEST_PAUSE=30 \
		STELLA_FAULT_REPORT=tests/faults/REPORT.md $(BIN)/pytest -q tests/faults

unit: install promtool
	$(BIN)/pytest -q tests/unit tests/contract tests/fuzz

# The fuzz tests (tests/fuzz) far longer than `make test` runs them: FUZZ_EXAMPLES random examples a
# test, each with a deadline; what fails is kept in .hypothesis/fuzz and tried first the next time.
FUZZ_EXAMPLES ?= 20000
fuzz: install
	STELLA_FUZZ_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -m fuzz tests/fuzz --timeout=0

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Throughput (ingest, rebuild) against raw aiokafka, then latency at half the measured rate.
bench: jars
	$(BIN)/python bench/ingest.py

# One locker with 1M artifacts of 1 KiB: rebuild, lookups, memory, disk, 10k anchors, 200 clients.
# About 15 minutes on 2 cores; BENCH_MILLION_ARGS="--count 20000" for a quick run.
bench-million: jars
	$(BIN)/python bench/million.py $(BENCH_MILLION_ARGS)

# Ingest with 1 and 2 workers, on one broker and on a three-broker cluster, each against raw
# aiokafka on the same brokers; BENCH_SCALE_ARGS="--count 20000".
bench-scale: jars
	$(BIN)/python bench/scale.py $(BENCH_SCALE_ARGS)

# Full verification of 2 GiB of blobs (1 KiB - 8 MiB) against sha256sum on every core; a 1% quick run.
bench-verify: jars
	$(BIN)/python bench/verify.py $(BENCH_VERIFY_ARGS)

# Backup and restore against tar, a restore of the log against a raw produce, and point-in-time
# recovery, on one locker of 1M artifacts (about 25 minutes); BENCH_RECOVERY_ARGS="--count 20000".
bench-recovery: jars
	$(BIN)/python bench/recovery.py $(BENCH_RECOVERY_ARGS)

# Retention cleanup of 100k artifacts against rm of the same files; BENCH_RETENTION_ARGS="--count 20000".
bench-retention: jars
	$(BIN)/python bench/retention.py $(BENCH_RETENTION_ARGS)

# Export and offline verification of a subject with 1,000 pieces of evidence vs tar + sha256sum.
bench-offline: jars
	$(BIN)/python bench/offline.py $(BENCH_OFFLINE_ARGS)

# Artifact downloads (1 KiB, 8 MiB; 1, 32, 200 clients) against nginx serving the same files, with wrk;
# both from Debian's packages into .tools (infra/install-bench-tools.sh). About 3 minutes.
bench-serve: jars
	bash infra/install-bench-tools.sh
	$(BIN)/python bench/serve.py $(BENCH_SERVE_ARGS)

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
