"""Build the small Go checkers under scripts/ once, cached by a digest of their sources.

The binary lands in ``$SPIFFE_BRIDGE_CACHE/bin`` (default ~/.cache/spiffe-bridge); the
first build fetches modules from the Go module proxy and can take a minute or two.
No Go toolchain: skip (``CI=true``: fail).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from _support.ci import missing

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def build_go_checker(name: str) -> Path:
    """The built ``scripts/<name>`` binary (go.mod, go.sum, main.go), rebuilt when they change."""
    source = SCRIPTS / name
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if not go:
        missing(f"no Go toolchain to build scripts/{name}")
    digest = hashlib.sha256()
    for part in ("go.mod", "go.sum", "main.go"):
        digest.update((source / part).read_bytes())
    cache = Path(os.environ.get("SPIFFE_BRIDGE_CACHE", Path.home() / ".cache" / "spiffe-bridge"))
    binary = cache / "bin" / f"{name}-{digest.hexdigest()[:12]}"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_suffix(f".tmp{os.getpid()}")
        done = subprocess.run(
            [go, "build", "-o", str(tmp), "."], cwd=source, capture_output=True, text=True, timeout=800
        )
        assert done.returncode == 0, done.stdout + done.stderr
        tmp.rename(binary)
    return binary
