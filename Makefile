# The two commands: `make run` (the demo) and `make test`. Both create .venv on first use.
# `make daemon` runs the daemon alone on $(CONFIG).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/default.toml

.PHONY: run daemon test lint typecheck pytest soak bench clean system-deps

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
pytest: $(VENV)/.test-stamp system-deps
	ARGBRIDGE_REQUIRE_KAFKA=$${ARGBRIDGE_REQUIRE_KAFKA:-$${CI:+1}} $(BIN)/pytest

# System packages the tests use (nginx for the reverse-proxy tests): installed only when
# missing and only as root; otherwise those tests skip (and fail under CI=true).
system-deps:
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] && [ "$$(id -u)" = 0 ]; then \
		sh scripts/install-system-deps.sh; \
	fi

test: lint typecheck pytest

# The 30-minute soak of issue 17 (ARGBRIDGE_SOAK_MINUTES to change it): RSS flat after
# warm-up, CPU per event printed. Not part of `make test`.
soak: $(VENV)/.test-stamp
	$(BIN)/pytest -m soak tests/test_soak.py -s

bench: $(VENV)/.test-stamp
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
