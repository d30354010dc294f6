"""``--version`` answers on the top command and on every subcommand, Go spelling included."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

import spiffe_bridge
from spiffe_bridge.cli import COMMANDS


@pytest.mark.parametrize("argv", [["--version"], ["run", "-version"], *([c, "--version"] for c in COMMANDS)])
def test_version_everywhere(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "spiffe_bridge", *argv], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"spiffe-bridge {spiffe_bridge.__version__} (Python ")


def test_version_is_the_installed_distributions() -> None:
    # pyproject reads the version from spiffe_bridge.__version__: one statement of the fact
    assert version("spiffe-bridge") == spiffe_bridge.__version__
