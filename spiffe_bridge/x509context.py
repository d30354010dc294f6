"""The X.509 context: everything one FetchX509SVID message says, validated as a whole.

SVIDs, the bundles of their own and of federated trust domains, and CRLs; a bad
update is rejected as a whole (``spiffe_bridge.client`` builds contexts from
messages) and never half-applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spiffe_bridge.spiffeid import SpiffeId, TrustDomain
from spiffe_bridge.x509bundle import X509Bundle
from spiffe_bridge.x509svid import X509Svid

__all__ = ["X509Context"]


@dataclass(frozen=True, eq=False)
class X509Context:
    """Everything one FetchX509SVID message says: SVIDs, bundles by trust domain, CRLs.

    ``bundles`` lists the SVIDs' own trust domains first, then federated ones by name.
    ``digest`` identifies the content, so identical re-deliveries can be ignored.
    """

    svids: tuple[X509Svid, ...]
    bundles: Mapping[TrustDomain, X509Bundle]
    federated: frozenset[TrustDomain]
    crls: tuple[bytes, ...]
    digest: bytes

    @property
    def default_svid(self) -> X509Svid:
        """The first SVID, which the Workload API defines as the default identity."""
        return self.svids[0]

    def svid(self, hint: str | None = None, spiffe_id: str | SpiffeId | None = None) -> X509Svid:
        """The SVID with this hint or SPIFFE ID (first match), else the default; SvidNotFoundError if none."""
        if hint is None and spiffe_id is None:
            return self.default_svid
        want = str(spiffe_id) if spiffe_id is not None else None
        for svid in self.svids:
            if hint is not None and svid.hint != hint:
                continue
            if want is not None and str(svid.spiffe_id) != want:
                continue
            return svid
        from spiffe_bridge.errors import SvidNotFoundError
        from spiffe_bridge.loglist import capped

        have = capped(f"{s.spiffe_id} (hint {s.hint!r})" for s in self.svids)
        raise SvidNotFoundError(
            f"no X.509-SVID with hint={hint!r} spiffe_id={want!r}; the agent sent: {have}"
        )

    def bundle_for(self, trust_domain: TrustDomain | str) -> X509Bundle | None:
        """The bundle for a trust domain (own or federated), or None when not trusted."""
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        return self.bundles.get(td)

    def federated_bundles(self) -> tuple[X509Bundle, ...]:
        """Bundles of federated trust domains, sorted by trust domain name."""
        return tuple(b for td, b in self.bundles.items() if td in self.federated)

    def to_pyspiffe(self) -> Any:
        """Convert to py-spiffe's ``X509Context``."""
        from spiffe import X509BundleSet as PyBundleSet
        from spiffe.workloadapi.x509_context import X509Context as PyContext

        bundles = PyBundleSet.of([b.to_pyspiffe() for b in self.bundles.values()])
        return PyContext([s.to_pyspiffe() for s in self.svids], bundles)
