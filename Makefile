# Two commands for a newcomer: `make demo` (set up, then run the pipeline on the embedded defaults)
# and `make test` (set up, then run the tests CI runs). Everything installs into .venv from this repo's files.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_EVALUATE_OFFLINE := 1
export DO_NOT_TRACK := 1

.PHONY: setup demo repro test test-slow ui bench clean

setup: $(VENV)/.installed

# torch is pinned first: unpinned, a dependency would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

demo: setup
	loraops run

repro: setup
	dvc repro

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25

test-slow: setup
	$(PY) -m pytest -q -m slow

ui: setup
	loraops ui

clean:
	rm -rf models data/raw data/prepared data/eval metrics plots mlflow.db mlartifacts .loraops
