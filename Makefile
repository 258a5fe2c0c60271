# The two commands: `make demo` runs a local network, `make test` runs the tests.
# Both create the virtual environment on first use.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo up test lint bench clean

$(STAMP): pyproject.toml
	bash .ci/sandbox-tools
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/idlegrid demo

up: $(STAMP)
	$(BIN)/idlegrid up

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check idlegrid tests benchmarks
	$(BIN)/ruff format --check idlegrid tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/heartbeats.py
	$(BIN)/python benchmarks/proof.py
	$(BIN)/python benchmarks/ledger.py
	$(BIN)/python benchmarks/matching.py
	$(BIN)/python benchmarks/deploy.py
	$(BIN)/python benchmarks/market.py

clean:
	rm -rf $(VENV) .idlegrid .pytest_cache
