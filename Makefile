# The two commands: `make run` (the demo) and `make test`. Both create .venv on first use.
# `make daemon` runs the daemon alone on $(CONFIG).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/default.toml

.PHONY: run daemon test lint typecheck pytest soak bench bench-peers clean system-deps bench-deps

$(BIN)/python:
	sh scripts/bootstrap-venv.sh "$(PYTHON)" "$(VENV)"

$(VENV)/.run-stamp: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[demo]'
	touch $@

$(VENV)/.test-stamp: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@ $(VENV)/.run-stamp

run: $(VENV)/.run-stamp
	$(BIN)/argbridge demo $(DEMO_ARGS)

daemon: $(VENV)/.run-stamp
	$(BIN)/argbridge run --config $(CONFIG)

lint: $(VENV)/.test-stamp
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.test-stamp
	$(BIN)/mypy

# Under CI=true the Apache Kafka suite must run: a missing Java/Maven fails it, never skips.
# One process by default. PYTEST_WORKERS=2: two pytest-xdist workers, one running every
# test that needs a broker (one xdist group, the brokers started once), the other the rest;
# about 5-6 minutes instead of 8-9, but one run of it failed on a leaked socket's
# ResourceWarning that an earlier test left for the garbage collector (not yet found).
PYTEST_WORKERS ?= 0
pytest: $(VENV)/.test-stamp system-deps
	ARGBRIDGE_REQUIRE_KAFKA=$${ARGBRIDGE_REQUIRE_KAFKA:-$${CI:+1}} \
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# System packages the tests use (nginx for the reverse-proxy tests): installed only when
# missing and only as root; otherwise those tests skip (and fail under CI=true).
system-deps:
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] && [ "$$(id -u)" = 0 ]; then \
		sh scripts/install-system-deps.sh; \
	fi

test: lint typecheck pytest

# Long fault loops (marker `soak`) and the Apache Kafka suite again on every version of the
# compatibility matrix (the newest 4.x and 3.9): CI runs it after `make test`.
SOAK_KAFKA_VERSIONS ?= 4.4.0,3.9.2
soak: $(VENV)/.test-stamp
	ARGBRIDGE_REQUIRE_KAFKA=$${ARGBRIDGE_REQUIRE_KAFKA:-$${CI:+1}} \
	ARGBRIDGE_KAFKA_VERSIONS=$(SOAK_KAFKA_VERSIONS) \
	$(BIN)/pytest -m "soak or apache_kafka" $(SOAK_ARGS)

# wrk, the HTTP load of the webhook benchmarks: installed when missing, as root (else the
# benchmark says how to install it).
bench-deps:
	@if ! command -v wrk >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		sh scripts/install-system-deps.sh wrk; \
	fi

bench: $(VENV)/.test-stamp bench-deps
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

# The Benthos peer (issue 15) beside argbridge on the same loads; builds Benthos once
# (bench/peers/build-benthos.sh: Go >= 1.25.2, the Go module proxy) into .cache/benthos/.
bench-peers: $(VENV)/.test-stamp bench-deps
	$(BIN)/python -m bench.bench_peers $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
