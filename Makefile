# The quick start: `make demo` runs a small scaling study on the CPU and fits it; `make test`
# runs the tests. Both set up .venv first (once; again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR := outputs/sweeps/demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an open requirement can pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/scaling-train -m sweep=demo sweep_id=demo
	$(BIN)/scaling-fit report $(DEMO_DIR) --out $(DEMO_DIR)/report.md

test: setup
	$(BIN)/python -m pytest

.PHONY: setup demo test
