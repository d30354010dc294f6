#!/usr/bin/env bash
# Build the wheel and sdist (`make dist`), install the wheel into a fresh venv outside the
# repository, and run `spiffe-bridge demo` there: proves the package works as a user gets
# it (package data, entry point, dependencies), not only from the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
log() { echo "[check-wheel] $*" >&2; }

make -s dist
wheel=$(ls -t dist/spiffe_bridge-*.whl | head -n 1)
sdist=$(ls -t dist/spiffe_bridge-*.tar.gz | head -n 1)
tar -tzf "$sdist" | grep '/LICENSE$' >/dev/null || { log "sdist $sdist has no LICENSE"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "installing $wheel into a clean venv in $work"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q "$wheel"
cd "$work"  # outside the repository: nothing can be imported from the source tree
"$work/venv/bin/spiffe-bridge" --help >/dev/null
"$work/venv/bin/spiffe-bridge" demo
test -s "$work/spiffe-bridge-demo/pem/svid.pem" || { log "demo wrote no pem/svid.pem"; exit 1; }
"$work/venv/bin/python" -c 'import spiffe_bridge, pathlib, sys; p = pathlib.Path(spiffe_bridge.__file__); sys.exit(0 if "venv" in p.parts and (p.parent / "py.typed").exists() else 1)'
log "ok: the wheel installs and runs the demo outside the repository"
