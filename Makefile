# Two entry points on a fresh machine: `make demo` (the main job) and `make test`.
# The browser tests (tests/browser) also need Debian's Chromium: `apt-get install -y chromium` (.ci/run does
# it); without /usr/bin/chromium they skip and say why.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup test check lint demo clean

$(BIN)/lossbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,browser]'
	touch $@

setup: $(BIN)/lossbench

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest -q

# The quick loop while working: lint and the unit tests (no real collector, no Locust run).
check: setup lint
	$(BIN)/pytest -q -m 'not slow'

demo: setup
	$(BIN)/lossbench run

clean:
	rm -rf $(VENV) *.egg-info
