"""examples/linkerd-vm/local-check.sh: the example's VM side (configs, unit ExecStart lines) really works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _support.binaries import spire_bin_dir
from _support.ci import needs

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "linkerd-vm" / "local-check.sh"
NEEDS = needs(shutil.which("bash") and shutil.which("openssl"), "local-check.sh needs bash and openssl")


def _run(spire_bin_dir: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "SPIRE_BIN_DIR": spire_bin_dir,
    }
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=180, env=env)


@NEEDS
def test_with_dev_agent_standing_in_for_spire() -> None:
    done = _run("/nonexistent")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("OK (dev-agent)")
    assert "restart command ran once" in done.stdout
    # run as one user, it must say that the units' users and modes went unchecked
    assert "NOT checked here: the units' users" in done.stdout


@NEEDS
@pytest.mark.interop
def test_with_real_spire() -> None:
    done = _run(str(spire_bin_dir()))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("OK (spire)")
