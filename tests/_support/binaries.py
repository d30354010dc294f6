"""Where the suite finds the SPIRE binaries it runs (spire-server, spire-agent, spiffe-helper).

``$SPIRE_BIN_DIR`` wins (``.ci/run`` exports it); otherwise the cache directory that
``scripts/install-spire.sh --print-bin-dir`` names. Missing: skip, or fail under CI.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from _support.ci import missing

REPO = Path(__file__).resolve().parents[2]
INSTALL_SPIRE = REPO / "scripts" / "install-spire.sh"


def spire_bin_dir(*binaries: str) -> Path:
    """The directory holding ``binaries`` (default spire-server and spire-agent)."""
    wanted = binaries or ("spire-server", "spire-agent")
    env = os.environ.get("SPIRE_BIN_DIR")
    if env:
        bin_dir, origin = Path(env), "$SPIRE_BIN_DIR"
    else:
        origin = f"{INSTALL_SPIRE.relative_to(REPO)} --print-bin-dir"
        try:
            out = subprocess.run(
                ["bash", str(INSTALL_SPIRE), "--print-bin-dir"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            missing(f"cannot ask {INSTALL_SPIRE} for the SPIRE bin dir: {exc}")
        bin_dir = Path(out.splitlines()[-1]) if out else Path()
    absent = [b for b in wanted if not os.access(bin_dir / b, os.X_OK)]
    if absent:
        missing(
            f"SPIRE binaries {', '.join(absent)} not found in {bin_dir} (from {origin}); "
            "run scripts/install-spire.sh (needs Go) to enable, or point SPIRE_BIN_DIR at a "
            "directory holding them"
        )
    return bin_dir
