# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install, and run the demo (render -> depth_node over DDS -> metrics + preview)
#   make test   - create .venv, install, and run the test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench

setup: $(STAMP)

$(STAMP): requirements.txt setup.py training/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps -e . -e training
	touch $@

demo: setup
	$(VENV)/bin/depth-kd demo --out demo_out

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(VENV)/bin/python test/benchmarks/bench_node.py
