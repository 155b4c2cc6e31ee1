# vxlanmgr: `make run` starts everything on the embedded default, `make test` runs the suite.
SHELL := /bin/bash
HOST ?= 127.0.0.1
PORT ?= 8000
VENV := .venv
PY := $(VENV)/bin/python
# The first Python that is 3.11 or newer.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& echo $$p && break; done)

.PHONY: run lab test lint bootstrap messages clean bench

$(VENV)/.runtime: requirements.txt
	@test -n "$(PYTHON)" || { echo "vxlanmgr needs Python 3.11 or newer on PATH" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt $(VENV)/.runtime
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The secret key and data directory, the schema, the admin user and a register token, each only if missing.
bootstrap: $(VENV)/.runtime
	$(PY) manage.py bootstrap

run: bootstrap
	$(PY) manage.py serve --host $(HOST) --port $(PORT)

# The VXLAN lab (root): 5 hosts and the manager in network namespaces, the dashboard on http://127.0.0.1:8800/.
# `make lab LAB_ARGS="--hosts 8 --port 8900"`; `make lab LAB_CMD=status|"fail h2"|"recover h2"|restart|down`.
# Two overlays with a monitor each (PostgreSQL; the lab runs its own redis-server): `make lab LAB_ARGS="--vnis
# 100,200 --monitors 2 --database-url postgres://postgres@127.0.0.1/vxlanmgr_lab"`, then
# LAB_CMD="isolate --vni 100"|"rejoin --vni 100"|"kill-monitor 100"|"start-monitor 100".
LAB_CMD ?= up
lab: export VXLANMGR_LAB = 1
lab: $(VENV)/.runtime
	$(PY) manage.py vxlanlab $(LAB_CMD) $(LAB_ARGS)

# Benchmarks (root; PostgreSQL, Redis, fping, nftables), ~17 minutes; writes docs/benchmarks.md. A database and a
# Redis DB of their own: the database is dropped and created again, the Redis DB flushed.
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/vxlanmgr_bench
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/14
bench: export DATABASE_URL = $(BENCH_DATABASE_URL)
bench: export REDIS_URL = $(BENCH_REDIS_URL)
bench: export VXLANMGR_SECRET_KEY = bench-only-not-a-secret
bench: export VXLANMGR_MAX_MACHINES = 10000
bench: export VXLANMGR_LAB = 1
bench: export VXLANMGR_ALLOWED_PREFIXES = 127.0.0.0/8
bench: $(VENV)/.dev
	$(PY) manage.py bench $(BENCH_ARGS)

# Tests never see a real secret; the suite may run against PostgreSQL (DATABASE_URL) where one is required.
test: export VXLANMGR_SECRET_KEY ?= test-only-not-a-secret
test: export VXLANMGR_LAB = 1
test: export VXLANMGR_ALLOWED_PREFIXES ?= 127.0.0.0/8
test: $(VENV)/.dev
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff, and the import contracts in pyproject.toml (the layers of docs/architecture.md).
lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

messages: $(VENV)/.dev
	$(PY) manage.py makemessages -l ja --no-obsolete -i ".venv/*" -i "var/*" -i "*/tests/*" -i "tests/*" -i "staticfiles/*"
	$(PY) manage.py compilemessages -l ja -i .venv

# docs/screenshots/*.png: the dashboard on a desktop and a phone, the delete dialog, the dark scheme. Needs Chromium
# at /usr/bin/chromium; uses a throwaway SQLite database and the real server on a free loopback port.
.PHONY: screenshots
screenshots: export VXLANMGR_LAB = 1
screenshots: $(VENV)/.dev
	$(PY) tests/browser/screenshots.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
