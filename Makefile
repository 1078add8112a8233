# Everything runs from the project's own virtualenv; `make install` creates it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install demo dev test lint format monitor dagster-home clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[demo,test]'
	touch $@

dagster-home:
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install dagster-home
	$(BIN)/python -m sqlgym_assets.demo

dev: install dagster-home
	$(BIN)/python -m sqlgym_assets.demo --serve

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
# Extraction speed and memory side by side (bench/extract_bench.py), then the 21-table hourly run
# per executor (bench/hourly_run.py); results in bench_results/. `make bench BENCH_ARGS="--rows
# 8000000"`; HOURLY_ARGS likewise. The bench extra (dlt, connectorx) is for this target only.
BENCH_ARGS ?=
HOURLY_ARGS ?=
bench: install
	$(BIN)/pip install --quiet -e '.[demo,test,bench]'
	$(BIN)/python bench/extract_bench.py $(BENCH_ARGS)
	$(BIN)/python bench/hourly_run.py $(HOURLY_ARGS)

clean:
	rm -rf .lake .dagster_home
