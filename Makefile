# Two commands: `make run` sets up everything and serves the portal; `make test` sets up and runs every test.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
FLASK := $(VENV)/bin/flask
PYTHON ?= python3.11
CONNECTORS := $(wildcard connectors/*/setup.cfg examples/*/setup.cfg)
STAMP := $(VENV)/.installed
PG_TEST_URL ?= postgresql+psycopg://root@127.0.0.1:5432/test
# Tests wait on subprocesses, servers and the database, so three workers keep two cores busy.
TEST_WORKERS ?= 3
# R64: this development setup declares that its data stays on this (UK) machine.
export PORTAL_DATA_LOCATION ?= UK

.PHONY: run test setup migrate demo serve workers bench clean screenshots

$(STAMP): setup.cfg pyproject.toml $(CONNECTORS)
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet -e ".[test,postgres]" $(foreach c,$(CONNECTORS),-e $(dir $(c)))
	touch $(STAMP)

setup: $(STAMP)

migrate: setup
	FLASK_APP=portal $(FLASK) db upgrade

demo: migrate
	FLASK_APP=portal $(FLASK) portal demo

# Serves on http://127.0.0.1:5000 with the sandbox providers running beside it.
run: migrate
	bash scripts/run-dev.sh

# The portal's tests, then the tests folder of every installed connector package (found through its entry point).
test: setup
	PORTAL_TEST_POSTGRES_URL=$(PG_TEST_URL) $(PY) -m pytest -n $(TEST_WORKERS) tests $$($(PY) -m portal.plugins.discover testpaths)

# Renews docs/screenshots/ from the browser tests (a plain test run leaves them untouched).
screenshots: setup
	UPDATE_SCREENSHOTS=1 PORTAL_TEST_POSTGRES_URL=$(PG_TEST_URL) $(PY) -m pytest tests/browser

# Celery workers beside `make run` when PORTAL_EXECUTOR=celery (docs/scaling.md): needs Redis at
# PORTAL_CELERY__broker_url; points each installed connector at the sandbox run-dev.sh starts on its dev port, unless set.
workers: migrate
	env $$($(PY) -m portal.plugins.discover env) $(VENV)/bin/celery -A portal.tasks worker --concurrency=$${WORKER_CONCURRENCY:-2} --loglevel=INFO

bench: setup
	$(PY) bench/extract.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
