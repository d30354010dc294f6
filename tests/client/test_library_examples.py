"""The library examples run unchanged against the dev agent."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from spiffe_bridge.devagent.server import DevAgent

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("script", ["fetch_sync.py", "fetch_async.py"])
@pytest.mark.dev_agent(rotate_every=0.5)
def test_example_runs(dev_agent: DevAgent, script: str) -> None:
    env = {**os.environ, **dev_agent.env()}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "spiffe://example.org/workload" in out.stdout
    assert "rotated: new serial" in out.stdout
