"""Blocking SPIFFE Broker API client: SVIDs and bundles of other workloads, by reference."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc

from spiffe_bridge import jwt, model
from spiffe_bridge._proto import brokerapi_pb2_grpc as bpb_grpc
from spiffe_bridge.broker._core import AgentSpec, BrokerLink, BrokerLinkMixin
from spiffe_bridge.broker.lifetime import ends_on_exit
from spiffe_bridge.broker.reference import Reference, as_reference
from spiffe_bridge.broker.tunnel import LoopThread
from spiffe_bridge.client._core import ErrorCallback, StreamSpec
from spiffe_bridge.client.sync import StreamingClient
from spiffe_bridge.retry import Backoff
from spiffe_bridge.sources.protocols import X509SourceLike
from spiffe_bridge.spiffeid import SpiffeId

T = TypeVar("T")


class BrokerClient(BrokerLinkMixin, StreamingClient):
    """A SPIFFE Broker API client: fetches and watches the identity of a *referenced* workload.

    ``source`` supplies this broker's own SVID (an ``X509Source`` on the Workload
    API; rotations are followed), ``spiffe_id``/``hint`` pick which of its SVIDs
    authenticates us, and ``agent`` says who may serve the endpoint (a SPIFFE ID,
    a trust domain, or an authorizer). Every call carries ``broker.spiffe.io: true``.
    Calls take a ``WorkloadPIDReference``, a ``KubernetesObjectReference`` or a PID.
    """

    def __init__(
        self,
        address: str | None,
        source: X509SourceLike,
        *,
        agent: AgentSpec,
        spiffe_id: str | SpiffeId | None = None,
        hint: str | None = None,
        backoff: Backoff | None = None,
        timeout: float | None = 30.0,
        on_error: ErrorCallback | None = None,
    ) -> None:
        self._link = link = BrokerLink(
            address,
            source,
            agent=agent,
            spiffe_id=spiffe_id,
            hint=hint,
            backoff=backoff,
            timeout=timeout,
            on_error=on_error,
        )
        self._loop = LoopThread("spiffe-bridge-broker-tunnel")
        try:
            self._loop.run(link.tunnel.start())
        except BaseException:
            self._loop.stop()
            link.context.close()
            raise
        channel = grpc.insecure_channel(link.tunnel.grpc_target, options=link.core.channel_options)
        super().__init__(link.core, channel, bpb_grpc.APIStub(channel))  # type: ignore[no-untyped-call]

    # -- X.509 ----------------------------------------------------------------------------

    def fetch_x509_context(
        self, workload: Reference | int, timeout: float | None = None
    ) -> model.X509Context:
        """The workload's current SVIDs and bundles (first SubscribeToX509SVID answer), validated."""
        return self._first(self._broker.x509_contexts(as_reference(workload)), timeout)

    def watch_x509_contexts(
        self, workload: Reference | int, on_error: ErrorCallback | None = None
    ) -> Iterator[model.X509Context]:
        """Yield each valid X.509 context of the workload; reconnects until closed."""
        return self._watch_ref(self._broker.x509_contexts, as_reference(workload), on_error)

    def fetch_x509_bundles(
        self, workload: Reference | int, timeout: float | None = None
    ) -> model.X509BundleSet:
        """The X.509 bundles the workload trusts (first SubscribeToX509Bundles answer)."""
        return self._first(self._broker.x509_bundles(as_reference(workload)), timeout)

    def watch_x509_bundles(
        self, workload: Reference | int, on_error: ErrorCallback | None = None
    ) -> Iterator[model.X509BundleSet]:
        """Yield each valid X.509 bundle set of the workload."""
        return self._watch_ref(self._broker.x509_bundles, as_reference(workload), on_error)

    # -- JWT ------------------------------------------------------------------------------

    def fetch_jwt_svids(
        self,
        workload: Reference | int,
        audience: str,
        *extra_audiences: str,
        spiffe_id: str | SpiffeId | None = None,
        timeout: float | None = None,
    ) -> list[jwt.JwtSvid]:
        """Mint the workload's JWT-SVIDs for the audience(s) (FetchJWTSVID)."""
        ref = as_reference(workload)
        request = self._broker.jwt_svid_request_for(ref, audience, extra_audiences, spiffe_id)
        response = self._unary("FetchJWTSVID", request, timeout, f"JWT-SVID of {ref}")
        return self._core.decode_jwt_svids(response)

    def fetch_jwt_svid(
        self,
        workload: Reference | int,
        audience: str,
        *extra_audiences: str,
        spiffe_id: str | SpiffeId | None = None,
        hint: str | None = None,
        timeout: float | None = None,
    ) -> jwt.JwtSvid:
        """Mint one JWT-SVID of the workload: its default identity, or the one with ``spiffe_id``/``hint``."""
        svids = self.fetch_jwt_svids(
            workload, audience, *extra_audiences, spiffe_id=spiffe_id, timeout=timeout
        )
        return self._core.pick_jwt_svid(svids, hint)

    def fetch_jwt_bundles(self, workload: Reference | int, timeout: float | None = None) -> jwt.JwtBundleSet:
        """The JWT bundles the workload trusts (first SubscribeToJWTBundles answer)."""
        return self._first(self._broker.jwt_bundles(as_reference(workload)), timeout)

    def watch_jwt_bundles(
        self, workload: Reference | int, on_error: ErrorCallback | None = None
    ) -> Iterator[jwt.JwtBundleSet]:
        """Yield each valid JWT bundle set of the workload."""
        return self._watch_ref(self._broker.jwt_bundles, as_reference(workload), on_error)

    # -- internals ------------------------------------------------------------------------

    def _watch_ref(
        self, spec: Callable[[Reference], StreamSpec[T]], ref: Reference, on_error: ErrorCallback | None
    ) -> Iterator[T]:
        """Watch; for a PID the watch ends with WorkloadExitedError when the process exits."""
        with ends_on_exit(ref, self._loop.loop) as stop:
            yield from self.watch(spec(ref), on_error, stop)

    def close(self) -> None:
        """Cancel streams, close the channel and the tunnel, stop following the source."""
        if self.closed:
            return
        super().close()
        try:
            self._loop.run(self._link.tunnel.close(), timeout=10)
        finally:
            self._loop.stop()
            self._link.context.close()
