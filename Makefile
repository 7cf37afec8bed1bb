# fundarb — the two commands of the README, and a few conveniences.
#   make run   create .venv, install everything (torch 2.13.0 first), run the main job, summarise
#   make test  the test suite (ruff + pytest); .ci/run calls exactly this
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# every version pinned with its hashes (uv compiles it, pip installs it); torch 2.13.0 CPU comes first, by name
LOCK := requirements.lock
LOCK_COMPILE := uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
	$(if $(wildcard /opt/wheels),--find-links /opt/wheels) --no-emit-package torch --custom-compile-command 'make lock' -o $(LOCK)
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: run test test-all dev bench lint clean lock browser

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e '.[dev]'
	touch $@

# after editing pyproject.toml's dependencies: re-pin (tests/test_lock.py fails until the lock matches)
lock:
	$(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install --quiet uv
	echo 'torch==2.13.0+cpu' > .venv-lock/torch.txt
	.venv-lock/bin/$(LOCK_COMPILE) -c .venv-lock/torch.txt

run: $(VENV)/.installed
	$(BIN)/fundarb run

# Debian's headless Chromium for tests/test_browser.py (apt, never a browser downloaded at run time)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; } || \
	  echo "make: the browser tests need Debian's chromium and chromium-driver (apt-get install as root)" >&2

test: $(VENV)/.installed browser
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
