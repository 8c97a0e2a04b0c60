# Two commands for a fresh machine: `make train` and `make test` (each sets up .venv first if needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: train test lint setup

# recbole's wheel carries MovieLens-100k (the recommendation default); the data alone is read, so it is
# installed without its own dependencies (old pins such as ray<=2.6.3 that nothing here needs)
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[app,dev]'
	$(PY) -m pip install --no-deps recbole==1.2.1
	touch $@

setup: $(VENV)/.installed  ## create .venv, install the project with the application and its dev tools

train: setup  ## train task=vision on the embedded MNIST digits (pass ARGS="key=value ..." to override)
	$(PY) train.py $(ARGS)

test: setup  ## the test suite CI runs (slow and GPU tests skipped)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -m "not slow and not gpu" $(ARGS)

lint: setup  ## ruff
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
