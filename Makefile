# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
TYPED := shared services exchange_cli banksim

.PHONY: install run test lint typecheck pytest bench bench-peers bench-eod clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	UV_PYTHON_DOWNLOADS=never $(UV) sync --frozen --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/exchange run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy $(wildcard $(TYPED))

pytest: install
	$(BIN)/exchange infra ensure
	$(BIN)/pytest

test: lint typecheck pytest

# Benchmarks (not part of `make test`); figures and commands are in docs/benchmarks.md.
bench-peers: install
	$(UV) pip install --python $(BIN)/python -r bench/matching_book/requirements.txt

bench: bench-peers
	$(BIN)/exchange infra ensure
	$(BIN)/python -m bench.matching_book.run
	$(BIN)/python -m bench.matching_service.run
	$(BIN)/python bench/custody/bench_custody.py
	$(BIN)/python bench/clearing/bench_clearing.py
	$(BIN)/python -m bench.gateway.run
	$(BIN)/python -m bench.gateway.e2e

# End of day through the real clearing and custody processes (about 15 minutes, most of it
# untimed setup and the capture of 1,000,000 trades); see docs/benchmarks.md "Clearing".
bench-eod: install
	$(BIN)/exchange infra ensure
	$(BIN)/python -m bench.clearing.bench_eod --trades 1000000 --members 10000 --products 50 --accounts 100000

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
