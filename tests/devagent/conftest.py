"""Fixtures for the dev agent tests: raw gRPC stubs that bypass any client library."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from spiffe_bridge._proto import workload_pb2_grpc
from spiffe_bridge.devagent.server import DevAgent


@pytest.fixture
def stub(dev_agent: DevAgent) -> Iterator[workload_pb2_grpc.SpiffeWorkloadAPIStub]:
    """A generated stub on a plain channel to ``dev_agent``; pass ``metadata=HEADER`` yourself."""
    with grpc.insecure_channel(dev_agent.grpc_target) as channel:
        yield workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]
