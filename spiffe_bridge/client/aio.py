"""asyncio Workload API client over ``grpc.aio``; same behaviour as the sync client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
import grpc.aio

from spiffe_bridge._proto import workload_pb2_grpc as pb_grpc
from spiffe_bridge._wire import Rpc
from spiffe_bridge.client._core import VALIDATION, ClientCore, ReconnectCounter
from spiffe_bridge.client._decode import decode_jwt_svids, decode_jwt_validation
from spiffe_bridge.client.stop import StopSignal
from spiffe_bridge.client.streams import JWT_BUNDLES, X509_BUNDLES, X509_CONTEXTS, ErrorCallback, StreamSpec
from spiffe_bridge.errors import SpiffeBridgeError, StreamEndedError, WorkloadApiError
from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.retry import Backoff, async_retrying
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.x509bundle import X509BundleSet
from spiffe_bridge.x509context import X509Context

T = TypeVar("T")


class AsyncStreamingClient:
    """asyncio calls, reconnecting streams and lifecycle, for any API served like the Workload API.

    The channel is opened lazily by ``_open`` (grpc.aio binds to the running loop);
    the Broker API client overrides ``_ready`` to start its TLS tunnel first.
    """

    def __init__(self, core: ClientCore) -> None:
        self._core = core
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._closed = asyncio.Event()
        self._calls: set[Any] = set()

    @property
    def endpoint(self) -> str:
        """The API's address in URI form."""
        return self._core.endpoint.uri

    def _open(self) -> tuple[grpc.aio.Channel, Any]:
        """A new channel and its stub; subclasses say where it goes and which service."""
        raise NotImplementedError

    async def _ready(self) -> Any:
        """The stub, opening the channel first if needed (raises when closed)."""
        if self._closed.is_set():
            raise SpiffeBridgeError("client is closed")
        if self._channel is None:
            self._channel, self._stub = self._open()
        return self._stub

    async def close(self) -> None:
        """Cancel open streams and close the channel."""
        self._closed.set()
        for call in list(self._calls):
            call.cancel()
        if self._channel is not None:
            await self._channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _unary(self, method: str, request: Any, timeout: float | None, what: str) -> Any:
        stub = await self._ready()
        try:
            return await getattr(stub, method)(
                request,
                metadata=self._core.metadata,
                timeout=self._core.call_timeout(timeout),
                wait_for_ready=True,
            )
        except grpc.RpcError as exc:
            raise self._core.error_from_rpc(exc, what) from None

    async def _first(self, spec: StreamSpec[T], timeout: float | None) -> T:
        call = (await self._stream(spec))(
            spec.request,
            metadata=self._core.metadata,
            timeout=self._core.call_timeout(timeout),
            wait_for_ready=True,
        )
        self._calls.add(call)
        try:
            async for message in call:
                return self._core.decode(spec, message)
        except grpc.RpcError as exc:
            raise self._core.error_from_rpc(exc, spec.what) from None
        finally:
            call.cancel()
            self._calls.discard(call)
        raise StreamEndedError(
            f"agent at {self._core.endpoint} closed the {spec.what} stream without an answer"
        )

    async def _stream(self, spec: StreamSpec[Any]) -> Any:
        await self._ready()  # opens the channel (or raises when closed)
        return spec.callable(self._channel)

    async def _watch(
        self, spec: StreamSpec[T], on_error: ErrorCallback | None, stop: StopSignal | None = None
    ) -> AsyncIterator[T]:
        """The reconnect supervisor: tenacity decides whether and when to reconnect, ``_once`` decodes.

        The attempt number follows ``ReconnectCounter`` (it starts over after a healthy
        stream), so the wait before each reconnect is ``Backoff.delay`` of that number.
        A ``stop`` signal ends the watch with its reason (e.g. the referenced workload exited).
        """
        counter = ReconnectCounter()
        supervisor = async_retrying(
            self._core.backoff,
            wake=self._closed,
            before_sleep=lambda exc, _: self._core.report(exc, on_error),
        )
        async for attempt in supervisor:
            if self._closed.is_set():
                return
            if stop is not None and stop.reason is not None:
                raise stop.reason
            failure: WorkloadApiError | None = None
            try:
                async for item in self._once(spec, on_error, counter, stop):
                    yield item  # outside the attempt: a closing consumer is never taken for a failure
            except WorkloadApiError as exc:
                failure = exc
            if failure is None or self._closed.is_set():
                return
            with attempt:
                attempt.retry_state.attempt_number = counter.ended(isinstance(failure, StreamEndedError))
                raise failure

    async def _once(
        self,
        spec: StreamSpec[T],
        on_error: ErrorCallback | None,
        counter: ReconnectCounter,
        stop: StopSignal | None,
    ) -> AsyncIterator[T]:
        """One stream: yield each message that decodes, then raise why it ended (return when closed)."""
        call = (await self._stream(spec))(spec.request, metadata=self._core.metadata, wait_for_ready=True)
        self._calls.add(call)
        if stop is not None:
            stop.attach(call.cancel)
        failure: WorkloadApiError
        try:
            async for message in call:
                if (item := self._core.accept(spec, message, counter, on_error)) is not None:
                    yield item
            failure = self._core.stream_ended(spec)
        except grpc.RpcError as exc:
            if self._closed.is_set():
                return
            if stop is not None and stop.reason is not None:
                raise stop.reason from None
            failure = self._core.error_from_rpc(exc, spec.what)
        except asyncio.CancelledError:
            # grpc.aio reports a cancelled call as CancelledError; ours (the stop signal) ends
            # the watch with its reason, a cancellation of the consuming task propagates
            task = asyncio.current_task()
            if stop is not None and stop.reason is not None and task is not None and not task.cancelling():
                raise stop.reason from None
            raise
        finally:
            call.cancel()
            self._calls.discard(call)
        # Raised here, not in the handler, and without the call in scope: tenacity keeps the
        # failure until the next one, and it must not keep the gRPC call (and its fds) alive.
        del call
        raise failure


class AsyncWorkloadClient(AsyncStreamingClient):
    """asyncio SPIFFE Workload API client; use ``async with``. Calls wait for a missing socket."""

    def __init__(
        self,
        address: str | None = None,
        *,
        backoff: Backoff | None = None,
        timeout: float | None = 30.0,
        on_error: ErrorCallback | None = None,
    ) -> None:
        super().__init__(ClientCore(address, backoff=backoff, timeout=timeout, on_error=on_error))

    def _open(self) -> tuple[grpc.aio.Channel, Any]:
        channel = grpc.aio.insecure_channel(
            self._core.endpoint.grpc_target, options=self._core.channel_options
        )
        return channel, pb_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]

    async def fetch_x509_context(self, timeout: float | None = None) -> X509Context:
        """The current SVIDs and bundles, validated."""
        return await self._first(X509_CONTEXTS, timeout)

    async def fetch_x509_bundles(self, timeout: float | None = None) -> X509BundleSet:
        """The current X.509 bundles."""
        return await self._first(X509_BUNDLES, timeout)

    async def fetch_jwt_bundles(self, timeout: float | None = None) -> JwtBundleSet:
        """The current JWT bundles."""
        return await self._first(JWT_BUNDLES, timeout)

    async def fetch_jwt_svids(
        self,
        audience: str,
        *extra_audiences: str,
        spiffe_id: str | SpiffeId | None = None,
        timeout: float | None = None,
    ) -> list[JwtSvid]:
        """Mint JWT-SVIDs for the audience(s)."""
        request = self._core.jwt_svid_request(audience, extra_audiences, spiffe_id)
        response = await self._unary(Rpc.FETCH_JWT_SVID, request, timeout, "JWT-SVID")
        return decode_jwt_svids(response)

    async def fetch_jwt_svid(
        self,
        audience: str,
        *extra_audiences: str,
        spiffe_id: str | SpiffeId | None = None,
        hint: str | None = None,
        timeout: float | None = None,
    ) -> JwtSvid:
        """Mint one JWT-SVID: the default identity, or the one with ``spiffe_id``/``hint``."""
        svids = await self.fetch_jwt_svids(audience, *extra_audiences, spiffe_id=spiffe_id, timeout=timeout)
        return self._core.pick_jwt_svid(svids, hint)

    async def validate_jwt_svid(self, token: str, audience: str, timeout: float | None = None) -> JwtSvid:
        """Ask the agent to validate a JWT-SVID."""
        request = self._core.validate_request(token, audience)
        response = await self._unary(Rpc.VALIDATE_JWT_SVID, request, timeout, VALIDATION)
        return decode_jwt_validation(token, response)

    def watch_x509_contexts(self, on_error: ErrorCallback | None = None) -> AsyncIterator[X509Context]:
        """Yield each valid X.509 context, reconnecting until closed or a non-retryable error."""
        return self._watch(X509_CONTEXTS, on_error)

    def watch_x509_bundles(self, on_error: ErrorCallback | None = None) -> AsyncIterator[X509BundleSet]:
        """Yield each valid X.509 bundle set."""
        return self._watch(X509_BUNDLES, on_error)

    def watch_jwt_bundles(self, on_error: ErrorCallback | None = None) -> AsyncIterator[JwtBundleSet]:
        """Yield each valid JWT bundle set."""
        return self._watch(JWT_BUNDLES, on_error)

    def watch(self, spec: StreamSpec[T], on_error: ErrorCallback | None = None) -> AsyncIterator[T]:
        """Yield each message of any stream spec that decodes (``unvalidated(X509_CONTEXTS)`` for relays)."""
        return self._watch(spec, on_error)
