# Two commands for a fresh machine: `make train` and `make test` (each sets up .venv first if needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: train test lint setup

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	touch $@

# mha.attention's optional compiled entry (mha/_native.py): built once per install; where it cannot be built
# (no C++ compiler, say) mha runs its Python entry, and the next make tries again
$(VENV)/.native: $(VENV)/.installed mha/_native.py
	$(PY) -m mha build --strict && touch $@ || echo "mha: the Python entry is used (see above); make retries the build"

setup: $(VENV)/.native  ## create .venv, install the project with its dev tools, build mha's compiled entry

train: setup  ## train task=vision on the embedded MNIST digits (pass ARGS="key=value ..." to override)
	$(PY) train.py $(ARGS)

test: setup  ## the test suite CI runs (slow and GPU tests skipped)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -m "not slow and not gpu" $(ARGS)

lint: setup  ## ruff
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
