# Both main targets create or refresh the virtual environment themselves.
#   make demo   prepare the real SmolLM2-135M-Instruct and generate from it
#   make test   ruff check, then the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv smollm2 demo test bench

$(STAMP): requirements.txt requirements-dev.txt setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -e .
	touch $(STAMP)

venv: $(STAMP)

smollm2: venv
	$(BIN)/uniarm prepare-smollm2

demo: smollm2
	$(BIN)/uniarm demo

test: smollm2
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

bench: smollm2
	$(BIN)/python bench/forward.py
