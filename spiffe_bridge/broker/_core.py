"""What the sync and async Broker API clients share: address, agent authorizer, setup, calls, errors.

``BrokerLink`` is the setup both build first (endpoint, our TLS context, the
tunnel, the core); ``BrokerLinkMixin`` is what both read from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import grpc

from spiffe_bridge import jwt, model
from spiffe_bridge._proto import brokerapi_pb2 as bpb
from spiffe_bridge.address import Endpoint, parse
from spiffe_bridge.broker.reference import Reference
from spiffe_bridge.broker.tunnel import TlsTunnel
from spiffe_bridge.client._core import ClientCore, ErrorCallback, StreamSpec
from spiffe_bridge.errors import (
    AddressError,
    AgentUnavailableError,
    BrokerTlsError,
    WorkloadApiError,
    WorkloadNotEntitledError,
    WorkloadNotFoundError,
)
from spiffe_bridge.retry import Backoff
from spiffe_bridge.sources.protocols import X509SourceLike
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain
from spiffe_bridge.tls.authorize import Authorizer, PeerRefusedError, authorize_id, authorize_member_of
from spiffe_bridge.tls.ssl_context import SpiffeSSLContext, client_ssl_context

#: Where the endpoint is looked up when no address is given (SPIFFE_Broker_Endpoint.md §4).
ENV_VAR = "SPIFFE_BROKER_SOCKET"
#: The security header every Broker API call must carry.
METADATA: tuple[tuple[str, str], ...] = (("broker.spiffe.io", "true"),)
#: Path prefix of the Broker API's RPCs.
SERVICE_PATH = "/spiffe.broker.API/"

AgentSpec = Authorizer | SpiffeId | TrustDomain | str


def resolve(address: str | None) -> Endpoint:
    """The endpoint from ``address``, else from ``SPIFFE_BROKER_SOCKET``."""
    value = address or os.environ.get(ENV_VAR, "")
    if not value:
        raise AddressError(
            f"no Broker API address: pass one explicitly or set {ENV_VAR} "
            "(e.g. unix:///run/spire/agent/broker/broker.sock)"
        )
    return parse(value)


def agent_authorizer(agent: AgentSpec) -> Authorizer:
    """Who may serve the Broker API: one SPIFFE ID, members of a trust domain, or any authorizer.

    A string with a path (``spiffe://td/spire/agent/...``) is an ID; without one
    (``spiffe://td`` or ``td``) a trust domain.
    """
    if isinstance(agent, SpiffeId):
        return authorize_id(agent)
    if isinstance(agent, TrustDomain):
        return authorize_member_of(agent)
    if isinstance(agent, str):
        rest = agent.removeprefix("spiffe://")
        return authorize_id(agent) if "/" in rest.rstrip("/") else authorize_member_of(agent)
    if isinstance(agent, Authorizer):
        return agent
    raise TypeError(f"agent must be a SPIFFE ID, a trust domain or an authorizer, not {type(agent).__name__}")


def broker_ssl_context(
    source: X509SourceLike, agent: AgentSpec, spiffe_id: str | SpiffeId | None, hint: str | None
) -> SpiffeSSLContext:
    """Client TLS for the Broker endpoint: our SVID (by ID or hint) following ``source``, ALPN h2."""
    context = client_ssl_context(source, agent_authorizer(agent), spiffe_id=spiffe_id, svid_hint=hint)
    context.set_alpn_protocols(["h2"])
    return context


class BrokerCore(ClientCore):
    """``ClientCore`` for the Broker API; failures name the tunnel's last TLS error when there is one."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        backoff: Backoff | None,
        timeout: float | None,
        on_error: ErrorCallback | None,
        tls_error: Callable[[], Exception | None],
    ) -> None:
        super().__init__(
            endpoint=endpoint,
            backoff=backoff,
            timeout=timeout,
            on_error=on_error,
            metadata=METADATA,
            api="Broker API",
            code_errors={grpc.StatusCode.NOT_FOUND: WorkloadNotFoundError},
        )
        self._tls_error = tls_error

    def error_from_rpc(self, exc: grpc.RpcError, what: str) -> WorkloadApiError:
        """As for the Workload API, but an unreachable endpoint whose TLS failed says why."""
        error = super().error_from_rpc(exc, what)
        tls = self._tls_error()
        if isinstance(error, AgentUnavailableError) and tls is not None:
            return tls_error(self.endpoint, tls, error.code)
        return error

    # -- requests ------------------------------------------------------------------------

    def x509_contexts(self, ref: Reference) -> StreamSpec[model.X509Context]:
        """SubscribeToX509SVID for ``ref``, decoded like FetchX509SVID."""
        request = bpb.SubscribeToX509SVIDRequest(reference=ref.message())

        def decode(message: Any) -> model.X509Context:
            # SPIRE answers a workload without entries with an empty message, not PermissionDenied.
            if not message.svids:
                raise WorkloadNotEntitledError(f"the agent issued no X.509-SVID for {ref}")
            return model.context_from_message(message)

        return StreamSpec(
            "SubscribeToX509SVID",
            request,
            decode,
            f"X.509 SVIDs of {ref}",
            bpb.SubscribeToX509SVIDResponse.FromString,
            SERVICE_PATH,
        )

    def x509_bundles(self, ref: Reference) -> StreamSpec[model.X509BundleSet]:
        """SubscribeToX509Bundles for ``ref``."""
        request = bpb.SubscribeToX509BundlesRequest(reference=ref.message())
        return StreamSpec(
            "SubscribeToX509Bundles",
            request,
            model.bundles_from_message,
            f"X.509 bundles of {ref}",
            bpb.SubscribeToX509BundlesResponse.FromString,
            SERVICE_PATH,
        )

    def jwt_bundles(self, ref: Reference) -> StreamSpec[jwt.JwtBundleSet]:
        """SubscribeToJWTBundles for ``ref``."""
        request = bpb.SubscribeToJWTBundlesRequest(reference=ref.message())
        return StreamSpec(
            "SubscribeToJWTBundles",
            request,
            jwt.bundles_from_message,
            f"JWT bundles of {ref}",
            bpb.SubscribeToJWTBundlesResponse.FromString,
            SERVICE_PATH,
        )

    def jwt_svid_request_for(
        self, ref: Reference, audience: str, extra: tuple[str, ...], spiffe_id: str | SpiffeId | None
    ) -> Any:
        """FetchJWTSVIDRequest for ``ref``; audiences checked as for the Workload API."""
        plain = self.jwt_svid_request(audience, extra, spiffe_id)
        return bpb.FetchJWTSVIDRequest(
            reference=ref.message(), audience=list(plain.audience), spiffe_id=plain.spiffe_id
        )


def tls_error(endpoint: Endpoint, cause: Exception, code: grpc.StatusCode | None = None) -> BrokerTlsError:
    """A BrokerTlsError saying which side refused the mutual TLS."""
    if isinstance(cause, PeerRefusedError):
        message = f"the Broker endpoint at {endpoint} is not the authorized agent: {cause}"
    else:
        message = f"no mutual TLS with the Broker endpoint at {endpoint}: {type(cause).__name__}: {cause}"
    return BrokerTlsError(message, code=code, details=str(cause))


class BrokerLink:
    """What both clients set up before their channel: endpoint, TLS context, tunnel (not started), core.

    A failed tunnel connection is reported to ``on_error`` as a ``BrokerTlsError``.
    """

    def __init__(
        self,
        address: str | None,
        source: X509SourceLike,
        *,
        agent: AgentSpec,
        spiffe_id: str | SpiffeId | None,
        hint: str | None,
        backoff: Backoff | None,
        timeout: float | None,
        on_error: ErrorCallback | None,
    ) -> None:
        endpoint = resolve(address)
        self.context = broker_ssl_context(source, agent, spiffe_id, hint)
        self.tunnel = TlsTunnel(endpoint, self.context, on_error=self._tunnel_error)
        self.core = BrokerCore(
            endpoint,
            backoff=backoff,
            timeout=timeout,
            on_error=on_error,
            tls_error=lambda: self.tunnel.last_error,
        )

    def _tunnel_error(self, exc: Exception) -> None:
        if self.core.on_error is not None:
            self.core.report(tls_error(self.core.endpoint, exc))


class BrokerLinkMixin:
    """What both clients read from their ``BrokerLink``."""

    _link: BrokerLink

    @property
    def agent_id(self) -> SpiffeId | None:
        """The SPIFFE ID the endpoint last authenticated as (None before the first connection)."""
        return self._link.tunnel.peer

    @property
    def _broker(self) -> BrokerCore:
        return self._link.core
