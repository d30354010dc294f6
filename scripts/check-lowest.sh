#!/usr/bin/env bash
# Install the LOWEST versions pyproject.toml allows for the runtime dependencies into a fresh
# venv, then run the unit tests and the demo there: a floor that is too low (an API the code
# uses that the floor lacks) fails here instead of on a user's machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
log() { echo "[check-lowest] $*" >&2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The floors, read from pyproject (stated once there): "name>=X" becomes "name==X".
"$PYTHON" - >"$work/constraints.txt" <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)\s*(,.*)?", dep)
    if not m:
        raise SystemExit(f"no >= floor in dependency {dep!r}")
    print(f"{m.group(1)}=={m.group(2)}")
PY
log "floors: $(tr '\n' ' ' <"$work/constraints.txt")"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
# the package with its runtime dependencies at their floors, and the test runner (not the
# dev extra: its tools, e.g. grpcio-tools, require newer grpcio than the floor)
"$work/venv/bin/python" -m pip install -q -c "$work/constraints.txt" -e . \
  pytest pytest-asyncio pytest-timeout hypothesis pyjwt prometheus-client  # test tools only
"$work/venv/bin/python" -m pip list 2>/dev/null | grep -iE "^(grpcio|protobuf|cryptography|tenacity) " >&2
# Not here: the py-spiffe conversions (py-spiffe's own pins conflict with our floors) and the
# stub drift test (grpcio-tools); the main suite runs both.
CI= "$work/venv/bin/python" -m pytest -q -p no:cacheprovider -m 'not interop and not consumers' \
  -k 'not pyspiffe and not test_checked_in_stubs_do_not_drift' tests/core tests/client tests/writers tests/demo
(cd "$work" && "$work/venv/bin/spiffe-bridge" demo --dir "$work/demo" >/dev/null)
log "ok: unit tests and the demo pass on the lowest allowed versions"
