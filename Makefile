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

# The order book compiled with mypyc (a dev dependency): the engine the matching service
# runs; services/matching/domain/book.py stays the reference and the fallback.
BOOK_SOURCES := $(addprefix services/matching/,domain/book.py domain/events.py domain/order.py domain/types.py build_book.py)
BOOK_SO := services/matching/domain/_compiled_book$(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')

$(BOOK_SO): $(VENV)/.installed $(BOOK_SOURCES)
	$(BIN)/python -m services.matching.build_book

install: $(VENV)/.installed $(BOOK_SO)

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
	$(BIN)/python -m bench.sql.overhead
	$(BIN)/python -m bench.messaging.pruning

# End of day through the real clearing and custody processes (about 15 minutes, most of it
# untimed setup and the capture of 1,000,000 trades); see docs/benchmarks.md "Clearing".
bench-eod: install
	$(BIN)/exchange infra ensure
	$(BIN)/python -m bench.clearing.bench_eod --trades 1000000 --members 10000 --products 50 --accounts 100000

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
	rm -f services/matching/domain/_compiled_book*.so
