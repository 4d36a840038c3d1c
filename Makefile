# The two commands of the Quick start: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint format stop check-deploy clean clean-data

help:
	@echo "make run          the whole platform on embedded PostgreSQL + NATS (http://127.0.0.1:8000)"
	@echo "make test         the test suite against real PostgreSQL and nats-server processes"
	@echo "make bench        the benchmark suite (saga through the API, audit consumer), one table"
	@echo "make lint         ruff lint and format check"
	@echo "make check-contracts  event contracts against their snapshot in contracts/ (breaking changes fail)"
	@echo "make stop         stop embedded servers left running by standalone manage.py commands"
	@echo "make clean-data   stop them and delete the data folder (.data)"

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required; found " + sys.version.split()[0] + " (set PYTHON=python3.11)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

# make run WEB_PORT=8001 WEB_CONCURRENCY=3; RELOAD=1 (= WEB_RELOAD=1): gunicorn --reload.
run: $(STAMP)
	$(if $(RELOAD),WEB_RELOAD=$(RELOAD) )$(BIN)/python manage.py runplatform

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The benchmark suite (bench/run_all.py): the saga through POST /api/orders/, then the audit
# consumer; one table at the end (~15 min on 2 cores). A report: FAILs do not fail make.
# e.g. make bench BENCH_ARGS='--saga "--runs 1 --scenarios a,e"'
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Every event contract's JSON Schema against the committed snapshot (contracts/): fails on a change
# that breaks a version, or on a snapshot not updated (`manage.py check_contracts --update` writes it).
# It reads code only: placeholder URLs keep the development settings from starting the servers.
# make check-contracts CONTRACTS_ARGS=--update rewrites the snapshot (refused on a breaking change).
.PHONY: check-contracts
check-contracts: $(STAMP)
	DJANGO_SETTINGS_MODULE=orders_platform.settings.development DATABASE_URL=postgresql://unused@127.0.0.1:9/unused \
		NATS_URL=nats://127.0.0.1:9 $(BIN)/python manage.py check_contracts --strict $(CONTRACTS_ARGS)

stop: $(STAMP)
	$(BIN)/python -m orders_platform.embedded stop

clean-data: stop
	rm -rf .data

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
