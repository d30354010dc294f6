"""asyncio SPIFFE Broker API client; same calls and behaviour as ``BrokerClient``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from spiffe_bridge import jwt, model
from spiffe_bridge._proto import brokerapi_pb2_grpc as bpb_grpc
from spiffe_bridge.broker._core import AgentSpec, BrokerLink, BrokerLinkMixin
from spiffe_bridge.broker.lifetime import ends_on_exit
from spiffe_bridge.broker.reference import Reference, as_reference
from spiffe_bridge.client._core import ErrorCallback, StreamSpec
from spiffe_bridge.client.aio import AsyncStreamingClient
from spiffe_bridge.retry import Backoff
from spiffe_bridge.sources.protocols import X509SourceLike
from spiffe_bridge.spiffeid import SpiffeId

T = TypeVar("T")


class AsyncBrokerClient(BrokerLinkMixin, AsyncStreamingClient):
    """asyncio SPIFFE Broker API client; use ``async with``. The TLS tunnel runs on the caller's loop.

    Arguments as for ``BrokerClient``; ``source`` may be an ``AsyncX509Source``.
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
        self._link = BrokerLink(
            address,
            source,
            agent=agent,
            spiffe_id=spiffe_id,
            hint=hint,
            backoff=backoff,
            timeout=timeout,
            on_error=on_error,
        )
        self._starting = asyncio.Lock()
        super().__init__(self._link.core)

    async def _ready(self) -> Any:
        async with self._starting:
            if self._channel is None and not self._closed.is_set():
                await self._link.tunnel.start()
        return await super()._ready()

    def _open(self) -> tuple[grpc.aio.Channel, Any]:
        channel = grpc.aio.insecure_channel(self._link.tunnel.grpc_target, options=self._core.channel_options)
        return channel, bpb_grpc.APIStub(channel)  # type: ignore[no-untyped-call]

    async def _watch_ref(
        self, spec: Callable[[Reference], StreamSpec[T]], ref: Reference, on_error: ErrorCallback | None
    ) -> AsyncIterator[T]:
        """Watch; for a PID the watch ends with WorkloadExitedError when the process exits."""
        with ends_on_exit(ref, asyncio.get_running_loop()) as stop:
            async for item in self._watch(spec(ref), on_error, stop):
                yield item

    async def fetch_x509_context(
        self, workload: Reference | int, timeout: float | None = None
    ) -> model.X509Context:
        """The workload's current SVIDs and bundles, validated."""
        return await self._first(self._broker.x509_contexts(as_reference(workload)), timeout)

    def watch_x509_contexts(
        self, workload: Reference | int, on_error: ErrorCallback | None = None
    ) -> AsyncIterator[model.X509Context]:
        """Yield each valid X.509 context of the workload, reconnecting until closed."""
        return self._watch_ref(self._broker.x509_contexts, as_reference(workload), on_error)

    async def fetch_x509_bundles(
        self, workload: Reference | int, timeout: float | None = None
    ) -> model.X509BundleSet:
        """The X.509 bundles the workload trusts."""
        return await self._first(self._broker.x509_bundles(as_reference(workload)), timeout)

    def watch_x509_bundles(
        self, workload: Reference | int, on_error: ErrorCallback | None = None
    ) -> AsyncIterator[model.X509BundleSet]:
        """Yield each valid X.509 bundle set of the workload."""
        return self._watch_ref(self._broker.x509_bundles, as_reference(workload), on_error)

    async def fetch_jwt_svids(
        self,
        workload: Reference | int,
        audience: str,
        *extra_audiences: str,
        spiffe_id: str | SpiffeId | None = None,
        timeout: float | None = None,
    ) -> list[jwt.JwtSvid]:
        """Mint the workload's JWT-SVIDs for the audience(s)."""
        ref = as_reference(workload)
        request = self._broker.jwt_svid_request_for(ref, audience, extra_audiences, spiffe_id)
        response = await self._unary("FetchJWTSVID", request, timeout, f"JWT-SVID of {ref}")
        return self._core.decode_jwt_svids(response)

    async def fetch_jwt_svid(
        self,
        workload: Reference | int,
        audience: str,
        *extra_audiences: str,
        spiffe_id: str | SpiffeId | None = None,
        hint: str | None = None,
        timeout: float | None = None,
    ) -> jwt.JwtSvid:
        """Mint one JWT-SVID of the workload."""
        svids = await self.fetch_jwt_svids(
            workload, audience, *extra_audiences, spiffe_id=spiffe_id, timeout=timeout
        )
        return self._core.pick_jwt_svid(svids, hint)

    async def fetch_jwt_bundles(
        self, workload: Reference | int, timeout: float | None = None
    ) -> jwt.JwtBundleSet:
        """The JWT bundles the workload trusts."""
        return await self._first(self._broker.jwt_bundles(as_reference(workload)), timeout)

    def watch_jwt_bundles(
        self, workload: Reference | int, on_error: ErrorCallback | None = None
    ) -> AsyncIterator[jwt.JwtBundleSet]:
        """Yield each valid JWT bundle set of the workload."""
        return self._watch_ref(self._broker.jwt_bundles, as_reference(workload), on_error)

    async def close(self) -> None:
        """Cancel streams, close the channel and the tunnel, stop following the source."""
        await super().close()
        await self._link.tunnel.close()
        self._link.context.close()
