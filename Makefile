# Quick start: `make demo` runs the demo on the embedded dev agent; `make test` runs the suite.
# Both create ./.venv and install what they need into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit interop deps spire linkerd bench dist check-wheel check-lowest clean

$(STAMP): pyproject.toml
	@echo "== first run: creating $(VENV) and installing spiffe-bridge with its test tools from PyPI (about a minute)"
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
	$(PY) -m pytest -q -rs

# Debian packages the consumer tests start (nginx, HAProxy, openssl, PostgreSQL, MariaDB); needs root.
deps:
	scripts/install-system-deps.sh

# Build pinned SPIRE and spiffe-helper with Go into ~/.cache/spiffe-bridge (cached).
spire:
	scripts/install-spire.sh

# Build linkerd2-proxy from ../shared/vendor with cargo into ~/.cache/spiffe-bridge (cached).
linkerd:
	scripts/install-linkerd-proxy.sh

interop: $(STAMP) spire linkerd
	$(PY) -m pytest -q -m interop tests/interop

# The wheel and the sdist into dist/ (the package is not on an index; install from these).
dist: $(STAMP)
	rm -rf dist build
	$(PY) -m build -o dist . >/dev/null
	@ls dist

# The wheel installed into a clean venv runs the demo outside the repository (CI runs this).
check-wheel:
	scripts/check-wheel.sh

# The unit tests and the demo on the lowest dependency versions pyproject allows (CI runs this).
check-lowest:
	scripts/check-lowest.sh

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache spiffe-bridge-demo dist build
