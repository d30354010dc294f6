"""Fixtures for writer tests: dev-agent CAs and validated X509Contexts."""

from __future__ import annotations

import pytest
from writers_pki import Pki, expired_root

from spiffe_bridge.devagent.ca import TrustDomainCA


@pytest.fixture(scope="session")
def pki() -> Pki:
    """example.org with an intermediate CA, federated with partner.test and another.test."""
    return Pki(
        TrustDomainCA("example.org", intermediate=True),
        federated=(TrustDomainCA("partner.test"), TrustDomainCA("another.test")),
    )


@pytest.fixture(scope="session")
def flat_pki() -> Pki:
    """example.org whose root signs the SVIDs directly, no federation."""
    return Pki(TrustDomainCA("example.org"))


@pytest.fixture(scope="session")
def expiring_pki() -> Pki:
    """example.org whose bundle also carries an expired root (for omit_expired)."""
    return Pki(TrustDomainCA("example.org"), extra_roots=(expired_root(),))
