"""The pytest plugin: fixtures, the ``dev_agent`` marker, and loading via the entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from _support.ci import needs

from spiffe_bridge.devagent.pytest_plugin import DevAgentFactory
from spiffe_bridge.devagent.server import DevAgent

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.dev_agent(trust_domain="marked.test", intermediate=True)
def test_marker_options_reach_the_agent(dev_agent: DevAgent) -> None:
    assert dev_agent.running and dev_agent.trust_domain == "marked.test"
    assert dev_agent.ca.uses_intermediate
    assert len(dev_agent.socket_path.encode()) < 108 and dev_agent.socket_path.startswith("/tmp/sb-")


def test_env_fixture_sets_endpoint(dev_agent_env: DevAgent) -> None:
    assert os.environ["SPIFFE_ENDPOINT_SOCKET"] == dev_agent_env.address


def test_factory_gives_independent_agents(dev_agent_factory: DevAgentFactory) -> None:
    a = dev_agent_factory(trust_domain="a.test")
    b = dev_agent_factory(trust_domain="b.test", federate_with=["a.test"])
    assert isinstance(a, DevAgent) and isinstance(b, DevAgent) and a.running and b.running
    assert a.socket_path != b.socket_path and a.trust_domain != b.trust_domain


@needs(
    any(ep.value == "spiffe_bridge.devagent.pytest_plugin" for ep in entry_points(group="pytest11")),
    "spiffe-bridge is not installed (pip install -e .), so the pytest11 entry point is inactive",
)
def test_fixtures_arrive_through_the_entry_point(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            from spiffe import WorkloadApiClient

            def test_user_gets_fixture(dev_agent):
                with WorkloadApiClient(dev_agent.address) as client:
                    svid = client.fetch_x509_svid()
                assert svid.leaf.serial_number == dev_agent.svids[0].serial_number
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
