# Two commands set up a fresh machine: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
TRAIN_STAMP := $(VENV)/.installed-train

.PHONY: demo test test-train lint bench train evaluate synth screenshots clean

# A recipe that fails leaves no target behind (a venv that failed half-way, say without
# Debian's python3.11-venv, is made again on the next run instead of taken as made).
.DELETE_ON_ERROR:

# python3.11, else a python3 that is 3.11 (pyproject: >=3.11,<3.12).
$(BIN)/python:
	if command -v $(PY) >/dev/null 2>&1; then $(PY) -m venv $(VENV); \
	elif python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then \
	    python3 -m venv $(VENV); \
	else echo "Python 3.11 is needed (apt-get install python3.11 python3.11-venv)" >&2; exit 1; fi
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,synth]'
	touch $@

$(TRAIN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,train]'
	touch $@

demo: $(STAMP)
	$(BIN)/screening demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The trainer's tests need torch (the train extra), which `make test` does not install.
test-train: $(TRAIN_STAMP)
	$(BIN)/python -m pytest -q tests/models/test_device_augment.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check screening firmware_bridge models tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

synth: $(STAMP)
	$(BIN)/python -m models.synth --out models/data $(SYNTH_ARGS)

train: $(TRAIN_STAMP)
	$(BIN)/python -m models.train $(TRAIN_ARGS)

evaluate: $(TRAIN_STAMP)
	$(BIN)/python -m models.evaluate $(EVAL_ARGS)

screenshots: $(STAMP)
	$(BIN)/python -m tests.web.screenshots --out docs/screenshots

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
