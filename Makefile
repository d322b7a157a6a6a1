# The two set-up commands of the README: `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
SHELL := /bin/bash

.PHONY: demo test check setup models lint bench evaluate clean

FAST_TESTS := -m "not models and not broker and not train"

setup:
	@bash scripts/setup.sh

# Installs everything, builds the models from ../shared if missing (cached), replays a sample
# recording through the whole pipeline: events printed and published to MQTT.
demo: setup models
	@bash scripts/demo.sh

models: setup
	@$(BIN)/nursery-monitor build-models $(BUILD_ARGS)

# The whole suite (what CI runs, in .ci/run): lint first, then every test, models built.
test: lint models
	@$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The fast tests while editing: no built models, no broker, no train extra needed (under 2 minutes).
check: setup
	@$(BIN)/python -m pytest -q $(FAST_TESTS) $(PYTEST_ARGS)

lint: setup
	@$(BIN)/ruff check monitor training export bench tests scripts

evaluate: setup models
	@$(BIN)/nursery-monitor evaluate

bench: setup models
	@$(BIN)/nursery-monitor bench $(BENCH_ARGS)

clean:
	rm -rf build models state
