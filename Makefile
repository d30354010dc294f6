# Quick start: `make demo` runs the demo on the embedded dev agent; `make test` runs the suite.
# Both create ./.venv and install what they need into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit interop deps spire bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/spiffe-bridge demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check spiffe_bridge

typecheck: $(STAMP)
	$(PY) -m mypy spiffe_bridge

# Everything: lint, types, unit + dev-agent + consumer + real-SPIRE tests. Components that are
# not installed are skipped with a message saying how to install them (in CI they fail the run).
test: lint typecheck
	$(PY) -m pytest -q

# Debian packages the consumer tests start (nginx, HAProxy, openssl, PostgreSQL, MariaDB); needs root.
deps:
	scripts/install-system-deps.sh

# Build pinned SPIRE and spiffe-helper with Go into ~/.cache/spiffe-bridge (cached).
spire:
	scripts/install-spire.sh

interop: $(STAMP) spire
	$(PY) -m pytest -q -m interop tests/interop

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache spiffe-bridge-demo
