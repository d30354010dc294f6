"""pytest fixtures for testing SPIFFE workloads against the dev agent.

Loaded automatically through the ``pytest11`` entry point when spiffe-bridge
is installed. Heavy imports happen inside the fixtures so that merely having
the plugin installed costs nothing.

Fixtures:
    dev_agent          a started DevAgent on a fresh short socket path
    dev_agent_factory  call with DevAgent keyword options to get more agents
    dev_agent_env      dev_agent, with SPIFFE_ENDPOINT_SOCKET pointing at it

Options for ``dev_agent``: ``@pytest.mark.dev_agent(trust_domain="x.org", intermediate=True)``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from .server import DevAgent


class DevAgentFactory(Protocol):
    """Creates and starts a DevAgent; all of them are stopped after the test."""

    def __call__(self, **options: Any) -> DevAgent: ...


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``dev_agent`` marker."""
    config.addinivalue_line(
        "markers", "dev_agent(**options): DevAgent keyword options for the dev_agent fixture"
    )


@pytest.fixture
def dev_agent_factory() -> Iterator[DevAgentFactory]:
    """Factory for started dev agents, each on its own socket under /tmp (paths stay < 108 bytes)."""
    from .server import DevAgent

    agents: list[DevAgent] = []
    dirs: list[str] = []

    def make(**options: Any) -> DevAgent:
        directory = tempfile.mkdtemp(prefix="sb-", dir="/tmp")
        dirs.append(directory)
        agent = DevAgent(os.path.join(directory, "agent.sock"), **options)
        agents.append(agent)
        return agent.start()

    try:
        yield make
    finally:
        for agent in agents:
            agent.stop()
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def dev_agent(request: pytest.FixtureRequest, dev_agent_factory: DevAgentFactory) -> DevAgent:
    """A fresh, started dev agent for this test (options from ``@pytest.mark.dev_agent``)."""
    marker = request.node.get_closest_marker("dev_agent")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    return dev_agent_factory(**options)


@pytest.fixture
def dev_agent_env(dev_agent: DevAgent, monkeypatch: pytest.MonkeyPatch) -> DevAgent:
    """``dev_agent`` with SPIFFE_ENDPOINT_SOCKET set for the duration of the test."""
    for key, value in dev_agent.env().items():
        monkeypatch.setenv(key, value)
    return dev_agent
