# One virtualenv in .venv; every target works from a fresh clone.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIPELINE ?= examples/hello.py:hello
# Touched after a successful install: targets reinstall only when pyproject.toml is newer.
INSTALLED := $(VENV)/.installed

.PHONY: install run test bench lint

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(INSTALLED)

run: install
	SERVING_PIPELINE=$(PIPELINE) $(BIN)/python -m serving

test: install
	$(BIN)/python -m pytest -q

bench: install
	@command -v wrk >/dev/null || { echo "bench needs wrk: apt-get install -y wrk"; exit 1; }
	$(BIN)/python bench/run.py --jobs

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
