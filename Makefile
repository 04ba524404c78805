# MyCepa login. `make run` starts everything and walks through the guide; `make test` tests it.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run up down test bench chaos venv clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	@echo "[setup] creating $(VENV) and installing the pinned dependencies..."
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

up: $(STAMP)
	@scripts/stack.sh up

down:
	@scripts/stack.sh down

run: up
	@source <(scripts/stack.sh env --raw) && $(VENV)/bin/python scripts/demo.py

test: $(STAMP)
	@scripts/infra.sh up
	@scripts/install-browser.sh
	@$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# One JSON report: code logins (successful, failed, throttled) and the push round trip,
# with CPU-ms and storage commands per login per process, on a system of its own
# (private RabbitMQ + FerretDB, the local APNs server, the services): scripts/bench.py.
bench: $(STAMP)
	@scripts/infra.sh build-ferretdb
	@$(VENV)/bin/python scripts/bench.py $(BENCH_ARGS)

# Faults injected one after another under load, on a stack and servers of its own
# (scripts/chaos.py); prints a table and fails when a fault costs a 5xx, a login or > 5 s.
chaos: $(STAMP)
	@scripts/infra.sh build-ferretdb
	@$(VENV)/bin/python scripts/chaos.py $(CHAOS_ARGS)

clean: down
	rm -rf .data $(VENV)
