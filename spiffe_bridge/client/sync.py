"""Blocking Workload API client over a grpc channel (threads)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from spiffe_bridge._proto import workload_pb2_grpc as pb_grpc
from spiffe_bridge._wire import Rpc
from spiffe_bridge.client._core import VALIDATION, ClientCore, ReconnectCounter
from spiffe_bridge.client._decode import decode_jwt_svids, decode_jwt_validation
from spiffe_bridge.client.stop import StopSignal
from spiffe_bridge.client.streams import JWT_BUNDLES, X509_BUNDLES, X509_CONTEXTS, ErrorCallback, StreamSpec
from spiffe_bridge.errors import SpiffeBridgeError, StreamEndedError, WorkloadApiError
from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.retry import Backoff, retrying
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.x509bundle import X509BundleSet
from spiffe_bridge.x509context import X509Context

T = TypeVar("T")


class StreamingClient:
    """Blocking calls, reconnecting streams and lifecycle, for any API served like the Workload API.

    ``core`` holds the endpoint, security header and error mapping; ``channel``
    and ``stub`` are how calls reach it (the Broker API client hands in a channel
    to its TLS tunnel).
    """

    def __init__(self, core: ClientCore, channel: grpc.Channel, stub: Any) -> None:
        self._core = core
        self._channel = channel
        self._stub = stub
        self._closed = threading.Event()
        self._calls: set[Any] = set()
        self._watches: set[Watch[Any]] = set()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """The API's address in URI form."""
        return self._core.endpoint.uri

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Cancel open streams and close the channel; iterators end quietly."""
        self._closed.set()
        with self._lock:
            calls, watches = list(self._calls), list(self._watches)
        for handle in watches:
            handle.cancel()
        for call in calls:
            call.cancel()
        self._channel.close()

    @property
    def closed(self) -> bool:
        """True once ``close`` was called."""
        return self._closed.is_set()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise SpiffeBridgeError("client is closed")

    def watch(
        self, spec: StreamSpec[T], on_error: ErrorCallback | None = None, stop: StopSignal | None = None
    ) -> Watch[T]:
        """A supervised stream of any spec; ``cancel()`` it to stop (closing the client stops all).

        A ``stop`` signal ends the watch with its reason (e.g. the referenced workload exited).
        """
        self._check_open()
        handle = Watch(self, spec, on_error, stop)
        with self._lock:
            self._watches.add(handle)
        return handle

    def _forget(self, handle: Watch[Any]) -> None:
        with self._lock:
            self._watches.discard(handle)

    def _track(self, call: Any, add: bool) -> None:
        with self._lock:
            if add:
                self._calls.add(call)
            else:
                self._calls.discard(call)

    def _unary(self, method: str, request: Any, timeout: float | None, what: str) -> Any:
        self._check_open()
        try:
            return getattr(self._stub, method)(
                request,
                metadata=self._core.metadata,
                timeout=self._core.call_timeout(timeout),
                wait_for_ready=True,
            )
        except grpc.RpcError as exc:
            raise self._core.error_from_rpc(exc, what) from None

    def _first(self, spec: StreamSpec[T], timeout: float | None) -> T:
        self._check_open()
        call = spec.callable(self._channel)(
            spec.request,
            metadata=self._core.metadata,
            timeout=self._core.call_timeout(timeout),
            wait_for_ready=True,
        )
        self._track(call, True)
        try:
            for message in call:
                return self._core.decode(spec, message)
        except grpc.RpcError as exc:
            raise self._core.error_from_rpc(exc, spec.what) from None
        finally:
            call.cancel()
            self._track(call, False)
        raise StreamEndedError(
            f"agent at {self._core.endpoint} closed the {spec.what} stream without an answer"
        )

    def _watch(
        self, spec: StreamSpec[T], on_error: ErrorCallback | None, handle: Watch[T], stop: StopSignal | None
    ) -> Iterator[T]:
        """The reconnect supervisor (tenacity), as in the asyncio client; ``_once`` decodes."""
        counter = ReconnectCounter()
        supervisor = retrying(
            self._core.backoff,
            wake=handle.stopped,
            before_sleep=lambda exc, _: self._core.report(exc, on_error),
        )
        for attempt in supervisor:
            if handle.stopped.is_set():
                return
            if stop is not None and stop.reason is not None:
                raise stop.reason
            failure: WorkloadApiError | None = None
            try:
                yield from self._once(spec, on_error, counter, handle, stop)
            except WorkloadApiError as exc:
                failure = exc
            if failure is None or handle.stopped.is_set():
                return
            with attempt:
                attempt.retry_state.attempt_number = counter.ended(isinstance(failure, StreamEndedError))
                raise failure

    def _once(
        self,
        spec: StreamSpec[T],
        on_error: ErrorCallback | None,
        counter: ReconnectCounter,
        handle: Watch[T],
        stop: StopSignal | None,
    ) -> Iterator[T]:
        """One stream: yield each message that decodes, then raise why it ended (return when stopped)."""
        call = spec.callable(self._channel)(spec.request, metadata=self._core.metadata, wait_for_ready=True)
        self._track(call, True)
        handle.current = call
        if stop is not None:
            stop.attach(call.cancel)
        if handle.stopped.is_set():
            call.cancel()
        failure: WorkloadApiError
        try:
            for message in call:
                if (item := self._core.accept(spec, message, counter, on_error)) is not None:
                    yield item
            failure = self._core.stream_ended(spec)
        except grpc.RpcError as exc:
            if handle.stopped.is_set():
                return
            if stop is not None and stop.reason is not None:
                raise stop.reason from None
            failure = self._core.error_from_rpc(exc, spec.what)
        finally:
            handle.current = None
            call.cancel()
            self._track(call, False)
        del call  # tenacity keeps the failure: it must not keep the call alive (see the asyncio client)
        raise failure


class WorkloadClient(StreamingClient):
    """A SPIFFE Workload API client. The socket may appear later: calls wait for it.

    ``fetch_*`` return one validated answer; ``watch_*`` yield every valid
    update for as long as you iterate, reconnecting with jittered backoff.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        backoff: Backoff | None = None,
        timeout: float | None = 30.0,
        on_error: ErrorCallback | None = None,
    ) -> None:
        core = ClientCore(address, backoff=backoff, timeout=timeout, on_error=on_error)
        channel = grpc.insecure_channel(core.endpoint.grpc_target, options=core.channel_options)
        super().__init__(core, channel, pb_grpc.SpiffeWorkloadAPIStub(channel))  # type: ignore[no-untyped-call]

    # -- one-shot calls -----------------------------------------------------------------

    def fetch_x509_context(self, timeout: float | None = None) -> X509Context:
        """The current SVIDs and bundles, validated."""
        return self._first(X509_CONTEXTS, timeout)

    def fetch_x509_bundles(self, timeout: float | None = None) -> X509BundleSet:
        """The current X.509 bundles of the own and federated trust domains."""
        return self._first(X509_BUNDLES, timeout)

    def fetch_jwt_bundles(self, timeout: float | None = None) -> JwtBundleSet:
        """The current JWT bundles (JWKS per trust domain)."""
        return self._first(JWT_BUNDLES, timeout)

    def fetch_jwt_svids(
        self,
        audience: str,
        *extra_audiences: str,
        spiffe_id: str | SpiffeId | None = None,
        timeout: float | None = None,
    ) -> list[JwtSvid]:
        """Mint JWT-SVIDs for the audience(s): all identities, or only ``spiffe_id``."""
        request = self._core.jwt_svid_request(audience, extra_audiences, spiffe_id)
        response = self._unary(Rpc.FETCH_JWT_SVID, request, timeout, "JWT-SVID")
        return decode_jwt_svids(response)

    def fetch_jwt_svid(
        self,
        audience: str,
        *extra_audiences: str,
        spiffe_id: str | SpiffeId | None = None,
        hint: str | None = None,
        timeout: float | None = None,
    ) -> JwtSvid:
        """Mint one JWT-SVID: the default identity, or the one with ``spiffe_id``/``hint``."""
        svids = self.fetch_jwt_svids(audience, *extra_audiences, spiffe_id=spiffe_id, timeout=timeout)
        return self._core.pick_jwt_svid(svids, hint)

    def validate_jwt_svid(self, token: str, audience: str, timeout: float | None = None) -> JwtSvid:
        """Ask the agent to validate a JWT-SVID (ValidateJWTSVID); return its parsed claims."""
        request = self._core.validate_request(token, audience)
        response = self._unary(Rpc.VALIDATE_JWT_SVID, request, timeout, VALIDATION)
        return decode_jwt_validation(token, response)

    # -- streams ------------------------------------------------------------------------

    def watch_x509_contexts(self, on_error: ErrorCallback | None = None) -> Watch[X509Context]:
        """Yield each valid X.509 context; reconnects forever until closed or a non-retryable error."""
        return self.watch(X509_CONTEXTS, on_error)

    def watch_x509_bundles(self, on_error: ErrorCallback | None = None) -> Watch[X509BundleSet]:
        """Yield each valid X.509 bundle set; reconnects like ``watch_x509_contexts``."""
        return self.watch(X509_BUNDLES, on_error)

    def watch_jwt_bundles(self, on_error: ErrorCallback | None = None) -> Watch[JwtBundleSet]:
        """Yield each valid JWT bundle set; reconnects like ``watch_x509_contexts``."""
        return self.watch(JWT_BUNDLES, on_error)


class Watch(Iterator[T]):
    """One supervised stream of a client: iterate it; ``cancel()`` ends it from any thread.

    Cancelling ends this stream only; the client stays open for other calls.
    """

    def __init__(
        self,
        client: StreamingClient,
        spec: StreamSpec[T],
        on_error: ErrorCallback | None,
        stop: StopSignal | None = None,
    ) -> None:
        self.stopped = threading.Event()
        self.current: Any = None
        self._client = client
        self._items = client._watch(spec, on_error, self, stop)

    def __next__(self) -> T:
        return next(self._items)

    def cancel(self) -> None:
        """End the stream; a blocked ``next`` returns StopIteration soon after."""
        self.stopped.set()
        call = self.current
        if call is not None:
            call.cancel()
        self._client._forget(self)
