"""What code that consumes a source may rely on: typed protocols, met by the sync and async sources.

Accept these in your own functions (the TLS helpers do) so that callers can hand
over ``X509Source`` or ``AsyncX509Source`` alike, or a test double. Every getter
of a closed source raises ``SourceClosedError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from spiffe_bridge.jwtbundle import JwtBundle, JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.sources.state import SourceStatus
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain
from spiffe_bridge.x509bundle import X509Bundle, X509BundleSet
from spiffe_bridge.x509context import X509Context
from spiffe_bridge.x509svid import X509Svid


class X509BundleSourceLike(Protocol):
    """Trust material only: the X.509 bundle of a trust domain (``X509BundleSource``, ``X509Source``)."""

    @property
    def status(self) -> SourceStatus: ...

    def bundle_for(self, trust_domain: TrustDomain | str) -> X509Bundle | None: ...


class X509SourceLike(X509BundleSourceLike, Protocol):
    """The whole X.509 context and its changes (``X509Source``, ``AsyncX509Source``)."""

    @property
    def context(self) -> X509Context: ...

    def svid(self, hint: str | None = None, spiffe_id: str | SpiffeId | None = None) -> X509Svid: ...

    def subscribe(self, callback: Callable[[X509Context], Any]) -> Callable[[], None]: ...


class X509BundleSetSourceLike(X509BundleSourceLike, Protocol):
    """Bundles from FetchX509Bundles and their changes (``X509BundleSource``, ``AsyncX509BundleSource``)."""

    @property
    def bundles(self) -> X509BundleSet: ...

    def subscribe(self, callback: Callable[[X509BundleSet], Any]) -> Callable[[], None]: ...


class JwtBundleSourceLike(Protocol):
    """JWT bundles for local validation (``JwtSource``, ``AsyncJwtSource``)."""

    @property
    def status(self) -> SourceStatus: ...

    @property
    def bundles(self) -> JwtBundleSet: ...

    def bundle_for(self, trust_domain: TrustDomain | str) -> JwtBundle | None: ...

    def validate(self, token: str, audience: str) -> JwtSvid: ...


#: The earlier name, kept as an alias: the same protocol (docs/library.md, "Names").
JWTBundleSourceLike = JwtBundleSourceLike
