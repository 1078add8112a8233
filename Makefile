# Everything runs from the project's own virtualenv; `make install` creates it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install demo dev shell lake-shell stop test lint format monitor dagster-home clean
# The UI's port for `make dev`: `make dev PORT=3001`.
PORT ?= 3000

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[demo,test,duckdb]'
	touch $@

dagster-home:
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install dagster-home
	$(BIN)/python -m sqlgym_assets.demo

dev: install dagster-home
	$(BIN)/python -m sqlgym_assets.demo --serve --port $(PORT)

# A shell with the virtualenv on PATH and the demo's database, lake and DAGSTER_HOME set, for the
# dagster CLI by hand (`exit` to leave). The same exports: eval "$(python -m sqlgym_assets.demo --env)".
shell: install dagster-home
	@eval "$$($(BIN)/python -m sqlgym_assets.demo --env)" && PATH="$(CURDIR)/$(BIN):$$PATH" exec $${SHELL:-bash}

# DuckDB on a lake with every table's current-state and history views: the demo's, or
# `make lake-shell LAKE=s3://bucket/prefix`.
LAKE ?= $(CURDIR)/.lake
lake-shell: install
	$(BIN)/sqlgym-lake shell --lake $(LAKE)

# Stops the demo's embedded PostgreSQL, which `make demo` and `make dev` leave running.
stop: install
	$(BIN)/python -m sqlgym_assets.demo --stop

monitor: install dagster-home
	$(BIN)/sqlgym-monitor

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: bench
# Extraction speed and memory side by side (bench/extract_bench.py), one materialization as a user
# waits for it, checks included (bench/end_to_end.py), the 21-table hourly run per executor and
# beside Dagster alone (bench/hourly_run.py), the reconciliation check as the lake grows
# (bench/reconciliation_bench.py), then a month's backfill as one run against a run per day
# (bench/backfill_bench.py); results in bench_results/. `make bench BENCH_ARGS="--rows 8000000"`;
# END_TO_END_ARGS, HOURLY_ARGS, RECONCILIATION_ARGS and BACKFILL_ARGS likewise. The bench extra
# (dlt, connectorx) is for this target only.
BENCH_ARGS ?=
END_TO_END_ARGS ?=
HOURLY_ARGS ?=
RECONCILIATION_ARGS ?=
BACKFILL_ARGS ?=
bench: install
	$(BIN)/pip install --quiet -e '.[demo,test,duckdb,bench]'
	$(BIN)/python bench/extract_bench.py $(BENCH_ARGS)
	$(BIN)/python bench/end_to_end.py $(END_TO_END_ARGS)
	$(BIN)/python bench/hourly_run.py $(HOURLY_ARGS)
	$(BIN)/python bench/reconciliation_bench.py $(RECONCILIATION_ARGS)
	$(BIN)/python bench/backfill_bench.py $(BACKFILL_ARGS)

# The demo's lake, instance and database (stopped, its data directory removed).
clean:
	if [ -x $(BIN)/python ]; then $(BIN)/python -m sqlgym_assets.demo --stop --remove-data; fi
	rm -rf .lake .dagster_home
