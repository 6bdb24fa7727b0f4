# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench deps clean

$(BIN)/gatewayd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# capparselib pins lxml==4.6.3 (no wheel for 3.11, no build here); it runs on our lxml.
	$(BIN)/pip install --quiet --no-deps 'capparselib==0.6.6'
	@touch $@

deps: $(BIN)/gatewayd
	@command -v mosquitto >/dev/null || command -v /usr/sbin/mosquitto >/dev/null || { \
	  echo "Mosquitto is missing: sudo apt-get install -y mosquitto mosquitto-clients"; exit 1; }

## Run the demo campus: relay-board simulators, a private Mosquitto and the daemon.
demo: deps
	$(BIN)/gatewayd demo

## Run the whole test suite (real Mosquitto, simulators over real sockets).
test: deps
	$(BIN)/python -m pytest

## ruff (lint and format), mypy --strict over the installed layout, the layer contracts.
lint: $(BIN)/gatewayd
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python .ci/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_layers.py

bench: deps
	$(BIN)/python -m bench.lockdown

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
