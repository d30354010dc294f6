"""Fixtures for relay tests: relays in front of dev agents, on short socket paths under /tmp."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from relay_helpers import RawStream, RelayFactory

from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.relay import Relay


@pytest.fixture
def relay_factory() -> Iterator[RelayFactory]:
    relays: list[Relay] = []
    directory = tempfile.mkdtemp(prefix="sbr-", dir="/tmp")

    def make(upstream: str, **options: Any) -> Relay:
        path = os.path.join(directory, f"relay{len(relays)}.sock")
        relay = Relay(upstream, "unix://" + path, **options)
        relays.append(relay)
        return relay.start()

    try:
        yield make
    finally:
        for relay in relays:
            relay.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def relay(dev_agent: DevAgent, relay_factory: RelayFactory) -> Relay:
    """A relay in front of ``dev_agent`` that already serves its first SVIDs."""
    started = relay_factory(dev_agent.address)
    started.wait_serving()
    return started


@pytest.fixture
def streams() -> Iterator[list[RawStream]]:
    """Collects RawStreams a test opens and closes them afterwards."""
    opened: list[RawStream] = []
    yield opened
    for stream in opened:
        stream.close()
