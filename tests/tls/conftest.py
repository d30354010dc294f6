"""Fixtures for TLS tests: a dev agent serving a server and a client SVID, and a source on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tls_peers import CLIENT_ID, SERVER_ID

from spiffe_bridge import X509Source
from spiffe_bridge.devagent import DevAgent, Identity
from spiffe_bridge.devagent.pytest_plugin import DevAgentFactory

IDENTITIES = [
    Identity(SERVER_ID, hint="server", dns_names=("localhost",)),
    Identity(CLIENT_ID, hint="client"),
]


@pytest.fixture
def agent(request: pytest.FixtureRequest, dev_agent_factory: DevAgentFactory) -> DevAgent:
    """A dev agent for example.org with ``server`` and ``client`` SVIDs (options from the marker)."""
    marker = request.node.get_closest_marker("dev_agent")
    options = dict(marker.kwargs) if marker else {}
    return dev_agent_factory(identities=IDENTITIES, **options)


@pytest.fixture
def source(agent: DevAgent) -> Iterator[X509Source]:
    with X509Source(agent.address, timeout=10) as src:
        yield src
