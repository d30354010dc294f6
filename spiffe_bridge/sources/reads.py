"""Read access shared by the sync and async sources of one kind; each holds a ``SourceState``.

Reads never block: they return the latest valid update, or raise NotReadyError
(none yet), NoIdentityError (the agent withdrew the identity) or
SourceClosedError (the source was closed).
"""

from __future__ import annotations

from typing import Any

from spiffe_bridge.jwtbundle import JwtBundle, JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid, validate_jwt_svid
from spiffe_bridge.sources.state import SourceState, SourceStatus
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain
from spiffe_bridge.x509bundle import X509Bundle, X509BundleSet
from spiffe_bridge.x509context import X509Context
from spiffe_bridge.x509svid import X509Svid


class Reads:
    """Status and counters, common to every source."""

    _state: SourceState[Any]

    @property
    def status(self) -> SourceStatus:
        """Where the stream stands (ready, reconnecting, identity lost, closed, ...)."""
        return self._state.status

    @property
    def last_error(self) -> Exception | None:
        """The most recent rejected update or stream error."""
        return self._state.last_error

    @property
    def state(self) -> SourceState[Any]:
        """Counters and status for health checks and metrics."""
        return self._state


class X509Reads(Reads):
    """``X509Source`` and ``AsyncX509Source``: the X.509 context of FetchX509SVID."""

    _state: SourceState[X509Context]

    @property
    def state(self) -> SourceState[X509Context]:
        """Counters and status for health checks and metrics."""
        return self._state

    @property
    def context(self) -> X509Context:
        """The latest valid X.509 context."""
        return self._state.current()

    def svid(self, hint: str | None = None, spiffe_id: str | SpiffeId | None = None) -> X509Svid:
        """The default SVID, or the one with this hint / SPIFFE ID."""
        return self.context.svid(hint=hint, spiffe_id=spiffe_id)

    def bundle_for(self, trust_domain: TrustDomain | str) -> X509Bundle | None:
        """The X.509 bundle of a trust domain (own or federated), or None when not trusted."""
        return self.context.bundle_for(trust_domain)


class X509BundleReads(Reads):
    """``X509BundleSource`` and ``AsyncX509BundleSource``: the bundles of FetchX509Bundles."""

    _state: SourceState[X509BundleSet]

    @property
    def state(self) -> SourceState[X509BundleSet]:
        """Counters and status for health checks and metrics."""
        return self._state

    @property
    def bundles(self) -> X509BundleSet:
        """The latest valid X.509 bundle set."""
        return self._state.current()

    def bundle_for(self, trust_domain: TrustDomain | str) -> X509Bundle | None:
        """The X.509 bundle of a trust domain, or None when not trusted."""
        return self.bundles.bundle_for(trust_domain)


class JwtReads(Reads):
    """``JwtSource`` and ``AsyncJwtSource``: the JWT bundles of FetchJWTBundles."""

    _state: SourceState[JwtBundleSet]

    @property
    def state(self) -> SourceState[JwtBundleSet]:
        """Counters and status for health checks and metrics."""
        return self._state

    @property
    def bundles(self) -> JwtBundleSet:
        """The latest valid JWT bundle set."""
        return self._state.current()

    def bundle_for(self, trust_domain: TrustDomain | str) -> JwtBundle | None:
        """The JWT bundle of a trust domain, or None."""
        return self.bundles.bundle_for(trust_domain)

    def validate(self, token: str, audience: str) -> JwtSvid:
        """Validate a JWT-SVID locally against the current bundles (JwtSvidError if invalid)."""
        return validate_jwt_svid(token, audience, self.bundles)
