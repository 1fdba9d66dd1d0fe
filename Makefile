# Every target creates .venv on a fresh machine and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,examples]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo_sklearn.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict shadowdeco

unit: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/sinks.py
	$(BIN)/python benchmarks/middleware.py
	$(BIN)/python benchmarks/url_client.py
	$(BIN)/python benchmarks/live_latency.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/cpu_bound.py
	$(BIN)/python benchmarks/report.py --repeat 2

soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --threads 8 --calls 1000000

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
