"""X.509 bundles: the CA certificates of one trust domain, and the set one FetchX509Bundles gives.

Every authority must be a CA certificate. Parsing is remembered by the bytes, so
a bundle the agent re-sends unchanged (on every rotation) is parsed once.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cryptography import x509

from spiffe_bridge._encoding import pem_block
from spiffe_bridge.errors import ValidationError
from spiffe_bridge.spiffeid import TrustDomain
from spiffe_bridge.x509check import CACHE_SIZE, is_ca, load_certs

__all__ = ["X509Bundle", "X509BundleSet"]


@dataclass(frozen=True, eq=False)
class X509Bundle:
    """The X.509 authorities of one trust domain, in the order the agent sent them."""

    trust_domain: TrustDomain
    authorities: tuple[x509.Certificate, ...]
    authorities_der: tuple[bytes, ...]

    @classmethod
    def parse_der(cls, trust_domain: TrustDomain, blob: bytes) -> X509Bundle:
        """Parse concatenated DER CA certificates; each must be a CA. Repeats come from a cache."""
        return _parse_bundle(trust_domain, bytes(blob))

    @cached_property
    def pem(self) -> bytes:
        """All authorities as concatenated PEM ``CERTIFICATE`` blocks."""
        return b"".join(pem_block("CERTIFICATE", der) for der in self.authorities_der)

    @cached_property
    def der(self) -> bytes:
        """All authorities as concatenated DER (the Workload API encoding)."""
        return b"".join(self.authorities_der)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, X509Bundle)
            and self.trust_domain == other.trust_domain
            and self.authorities_der == other.authorities_der
        )

    def __hash__(self) -> int:
        return hash((self.trust_domain, self.authorities_der))

    def to_pyspiffe(self) -> Any:
        """Convert to py-spiffe's ``X509Bundle``."""
        from spiffe import X509Bundle as PyX509Bundle

        return PyX509Bundle.parse_raw(self.trust_domain.to_pyspiffe(), self.der)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _parse_bundle(trust_domain: TrustDomain, blob: bytes) -> X509Bundle:
    certs, ders = load_certs(blob, f"bundle for {trust_domain}")
    for i, cert in enumerate(certs):
        if not is_ca(cert):
            raise ValidationError(f"bundle for {trust_domain}: authority {i} is not a CA certificate")
    return X509Bundle(trust_domain, certs, ders)


@dataclass(frozen=True, eq=False)
class X509BundleSet:
    """What one FetchX509Bundles message says: bundles by trust domain, and CRLs."""

    bundles: Mapping[TrustDomain, X509Bundle]
    crls: tuple[bytes, ...]
    digest: bytes

    def bundle_for(self, trust_domain: TrustDomain | str) -> X509Bundle | None:
        """The bundle for a trust domain, or None."""
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        return self.bundles.get(td)
