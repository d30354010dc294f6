"""Fixtures for core tests: dev-agent CAs and hand-built Workload API messages from them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from _support.pki import svid_message

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.devagent.ca import TrustDomainCA


@pytest.fixture(scope="session")
def ca() -> TrustDomainCA:
    return TrustDomainCA("example.org")


@pytest.fixture(scope="session")
def ca_intermediate() -> TrustDomainCA:
    return TrustDomainCA("example.org", intermediate=True)


@pytest.fixture(scope="session")
def fed_ca() -> TrustDomainCA:
    return TrustDomainCA("partner.test")


@pytest.fixture
def make_response(ca: TrustDomainCA) -> Callable[..., Any]:
    def build(*ids: str, federated: dict[str, bytes] | None = None) -> Any:
        ids = ids or ("spiffe://example.org/web",)
        return pb.X509SVIDResponse(
            svids=[svid_message(ca, i, hint=f"h{n}") for n, i in enumerate(ids)],
            federated_bundles=federated or {},
        )

    return build
