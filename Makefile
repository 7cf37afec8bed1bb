# fundarb — the two commands of the README, and a few conveniences.
#   make run   create .venv, install everything (torch 2.13.0 first), run the main job, summarise
#   make test  the test suite (ruff + pytest); .ci/run calls exactly this
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: run test test-all dev bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/fundarb run

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest

test-all: $(VENV)/.installed
	$(BIN)/pytest -m ''

dev: $(VENV)/.installed
	$(BIN)/fundarb dev

bench: $(VENV)/.installed
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/features.py
	$(BIN)/python bench/keeper_cycle.py
	$(BIN)/python bench/deep_training.py
	$(BIN)/python bench/walk_forward.py  # the peer (mlforecast) needs: pip install --no-deps mlforecast coreforecast utilsforecast

lint: $(VENV)/.installed
	$(BIN)/ruff check .

clean:
	rm -rf data .dagster_home mlflow/mlflow.db mlflow/artifacts

# The production profile (deploy/profile.sh; README "Production profile"): PostgreSQL, Redis, MLflow server,
# Dagster code server + webserver + daemon, Celery workers — all local, no Docker.
.PHONY: deploy-up deploy-down deploy-status deploy-bench
deploy-up: $(VENV)/.installed
	FUNDARB_BIN=$(abspath $(BIN)) deploy/profile.sh up
deploy-down:
	FUNDARB_BIN=$(abspath $(BIN)) deploy/profile.sh down
deploy-status:
	FUNDARB_BIN=$(abspath $(BIN)) deploy/profile.sh status
deploy-bench: $(VENV)/.installed
	FUNDARB_BIN=$(abspath $(BIN)) $(BIN)/python deploy/bench_workers.py
