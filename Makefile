# The two set-up commands of the README: `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
SHELL := /bin/bash

.PHONY: demo test setup models lint bench evaluate clean

setup:
	@bash scripts/setup.sh

# Installs everything, builds the models from ../shared if missing (cached), replays a sample
# recording through the whole pipeline: events printed and published to MQTT.
demo: setup models
	@bash scripts/demo.sh

models: setup
	@$(BIN)/nursery-monitor build-models $(BUILD_ARGS)

test: setup models
	@$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: setup
	@$(BIN)/ruff check monitor training export bench tests

evaluate: setup models
	@$(BIN)/nursery-monitor evaluate

bench: setup models
	@$(BIN)/nursery-monitor bench $(BENCH_ARGS)

clean:
	rm -rf build models state
