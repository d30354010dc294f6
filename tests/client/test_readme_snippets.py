"""The README's Python blocks run as written against the dev agent (a snippet that rots fails here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.dev_agent(identities=["spiffe://example.org/web", "spiffe://example.org/api#internal"])
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int, dev_agent: Any, tmp_path: Path) -> None:
    block = BLOCKS[index]
    env = {**os.environ, "SPIFFE_ENDPOINT_SOCKET": dev_agent.address}
    if "def test_" in block:  # a pytest example: run it as a test module with the plugin's fixtures
        (tmp_path / "test_snippet.py").write_text(block)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    else:
        command = [sys.executable, "-c", block]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"README block {index}:\n{block}\n{done.stdout}\n{done.stderr}"
