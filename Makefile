# Every target builds .venv and installs what it needs when missing, so a fresh
# clone with only Python 3.11 and make is enough.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp is older than pyproject.toml whenever the dependencies change.
STAMP  := $(VENV)/.installed

# CI (CI=true) always has PostgreSQL and MariaDB on the machine: point the
# integration tests at them so none of them is skipped there.
ifeq ($(CI),true)
export VODPOLLER_TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
export VODPOLLER_TEST_MYSQL_URL ?= mysql+pymysql://root@127.0.0.1:3306/test
endif
# The SDK honours HTTP(S)_PROXY; the emulator is always on loopback.
export NO_PROXY := 127.0.0.1,localhost,$(NO_PROXY)

# Where `make dist` puts the wheel.
DIST   ?= dist

.PHONY: demo dist test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres,mysql]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vodpoller demo

# The wheel to install anywhere: pip install 'dist/vodpoller-<version>-py3-none-any.whl[postgres]'.
# It carries the migrations and the emulator's samples; pip fetches the build backend.
dist: | $(BIN)/python
	rm -f $(DIST)/vodpoller-*.whl
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir $(DIST) .
	@ls $(DIST)/vodpoller-*.whl

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# BENCH_ARGS go to bench.drain, e.g. BENCH_ARGS="--quick" or
# BENCH_ARGS="--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/test".
bench: $(STAMP)
	$(BIN)/python -m bench.emulator_throughput
	$(BIN)/python -m bench.drain $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache vodpoller-demo.db build dist
