# duin: one command to set up and run the demo, one to set up and run the tests.
#   make demo   -> virtualenv (.venv) with torch==2.13.0 (CPU wheel) + duin, then `duin demo`
#   make test   -> the same environment + test tools, then lint and pytest
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
# Test-only data: a short real BIDS iEEG recording shipped inside this PyPI package (installed
# without its many dependencies: we only read its data/ folder).
PNM_SPEC ?= py-neuromodulation==0.1.3
TOOLS := .tools

.PHONY: setup setup-dev tools test test-all lint format demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps "$(PNM_SPEC)"
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

# The official BIDS validator (npm package, runs offline). Tests that need it skip when absent.
$(TOOLS)/node_modules/.bin/bids-validator:
	@if command -v npm >/dev/null 2>&1; then \
		mkdir -p $(TOOLS) && cd $(TOOLS) && npm install --silent --no-audit --no-fund bids-validator@1.15.0 >/dev/null; \
	else echo "npm not found: BIDS validation tests will be skipped"; fi

tools: $(TOOLS)/node_modules/.bin/bids-validator

lint: setup-dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports

format: setup-dev
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

test: setup-dev tools lint
	PATH="$(CURDIR)/$(TOOLS)/node_modules/.bin:$$PATH" $(PY) -m pytest

test-all: setup-dev tools
	PATH="$(CURDIR)/$(TOOLS)/node_modules/.bin:$$PATH" $(PY) -m pytest -m ""

demo: setup
	$(VENV)/bin/duin demo

bench: setup
	$(PY) benchmarks/models.py
	$(PY) benchmarks/data.py

clean:
	rm -rf $(VENV) $(TOOLS) build dist src/*.egg-info .pytest_cache .ruff_cache
