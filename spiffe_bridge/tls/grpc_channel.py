"""A gRPC client channel over mTLS that follows an X.509 source's rotations.

gRPC Python's channel credentials are static, so ``SpiffeChannel`` builds a
new secure channel whenever the source's context changes and hands each call
to the newest one (stubs created once keep working). The replaced channel is
closed ``retire_after`` seconds later, so calls in flight can finish.

Limits, stated plainly: gRPC Python offers the client no verify callback and
no auth context, so the client cannot check the *server's SPIFFE ID*. What it
can enforce: the server's chain must lead to the roots we pass (only the
bundle of ``server_trust_domain`` when given, which keeps other trust domains'
authorities from vouching for the server), and gRPC's own hostname check
requires the target host (or ``grpc.ssl_target_name_override``) to be a DNS
SAN of the server's SVID (SPIRE: ``-dns`` on the entry). For an ID-level check
of the server use the stdlib ``ssl`` helpers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import grpc

from spiffe_bridge.model import X509Context
from spiffe_bridge.sources.protocols import X509SourceLike
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain
from spiffe_bridge.tls._follow import Follower
from spiffe_bridge.tls.grpc_credentials import grpc_channel_credentials


class _Rebinding:
    """A multi-callable that resolves to the newest channel's on every call."""

    def __init__(self, owner: SpiffeChannel, kind: str, method: str, kwargs: dict[str, Any]) -> None:
        self._owner = owner
        self._kind = kind
        self._method = method
        self._kwargs = kwargs
        self._bound: tuple[grpc.Channel, Any] | None = None

    def _target(self) -> Any:
        channel = self._owner._channel()
        bound = self._bound
        if bound is None or bound[0] is not channel:
            bound = (channel, getattr(channel, self._kind)(self._method, **self._kwargs))
            self._bound = bound
        return bound[1]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def with_call(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().with_call(*args, **kwargs)

    def future(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().future(*args, **kwargs)


class _UnaryUnary(_Rebinding, grpc.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    pass


class _UnaryStream(_Rebinding, grpc.UnaryStreamMultiCallable):  # type: ignore[type-arg]
    pass


class _StreamUnary(_Rebinding, grpc.StreamUnaryMultiCallable):  # type: ignore[type-arg]
    pass


class _StreamStream(_Rebinding, grpc.StreamStreamMultiCallable):  # type: ignore[type-arg]
    pass


class SpiffeChannel(grpc.Channel):
    """A ``grpc.Channel`` over mTLS that is rebuilt with fresh credentials on every rotation.

    Stubs made from it (``FooStub(channel)``) always call through the newest
    channel. Old channels are closed ``retire_after`` seconds after being
    replaced (None: only on ``close``); RPCs still running on them then end
    with CANCELLED. See the module docstring for what the client can and cannot
    check about the server.
    """

    def __init__(
        self,
        target: str,
        source: X509SourceLike,
        *,
        server_trust_domain: TrustDomain | str | None = None,
        svid_hint: str | None = None,
        spiffe_id: SpiffeId | str | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        compression: grpc.Compression | None = None,
        retire_after: float | None = 60.0,
    ) -> None:
        self.target = target
        self._server_td = server_trust_domain
        self._svid_hint = svid_hint
        self._svid_id = spiffe_id
        self._options = list(options or ())
        self._compression = compression
        self._retire_after = retire_after
        self._retiring: dict[grpc.Channel, threading.Timer | None] = {}
        self._lock = threading.Lock()
        self._follower: Follower[grpc.Channel] = Follower(
            source, self._build, f"grpc channel to {target}", on_replace=self._retire
        )

    def _build(self, context: X509Context) -> grpc.Channel:
        credentials = grpc_channel_credentials(
            context, server_trust_domain=self._server_td, svid_hint=self._svid_hint, spiffe_id=self._svid_id
        )
        return grpc.secure_channel(self.target, credentials, self._options, self._compression)

    def _retire(self, old: grpc.Channel) -> None:
        if self._retire_after is not None and self._retire_after <= 0:
            old.close()
            return
        timer = None
        if self._retire_after is not None:
            timer = threading.Timer(self._retire_after, self._close_retired, (old,))
            timer.daemon = True
        with self._lock:
            self._retiring[old] = timer
        if timer is not None:
            timer.start()

    def _close_retired(self, old: grpc.Channel) -> None:
        with self._lock:
            self._retiring.pop(old, None)
        old.close()

    def _channel(self) -> grpc.Channel:
        return self._follower.current[1]

    @property
    def x509_context(self) -> X509Context:
        """The X.509 context the current channel's credentials come from."""
        return self._follower.current[0]

    @property
    def generation(self) -> int:
        """Starts at 1; goes up each time the channel is rebuilt."""
        return self._follower.generation

    def wait_for(self, predicate: Callable[[X509Context], bool], timeout: float | None = 30.0) -> X509Context:
        """Block until the current channel was built from a context satisfying ``predicate``."""
        return self._follower.wait_for(predicate, timeout)

    # ----- grpc.Channel -----
    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[..., Any] | None = None,
        response_deserializer: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> grpc.UnaryUnaryMultiCallable:  # type: ignore[type-arg]
        """A unary-unary multi-callable bound to the newest channel at each call."""
        kwargs.update(request_serializer=request_serializer, response_deserializer=response_deserializer)
        return _UnaryUnary(self, "unary_unary", method, kwargs)

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[..., Any] | None = None,
        response_deserializer: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> grpc.UnaryStreamMultiCallable:  # type: ignore[type-arg]
        """A unary-stream multi-callable bound to the newest channel at each call."""
        kwargs.update(request_serializer=request_serializer, response_deserializer=response_deserializer)
        return _UnaryStream(self, "unary_stream", method, kwargs)

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[..., Any] | None = None,
        response_deserializer: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> grpc.StreamUnaryMultiCallable:  # type: ignore[type-arg]
        """A stream-unary multi-callable bound to the newest channel at each call."""
        kwargs.update(request_serializer=request_serializer, response_deserializer=response_deserializer)
        return _StreamUnary(self, "stream_unary", method, kwargs)

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[..., Any] | None = None,
        response_deserializer: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> grpc.StreamStreamMultiCallable:  # type: ignore[type-arg]
        """A stream-stream multi-callable bound to the newest channel at each call."""
        kwargs.update(request_serializer=request_serializer, response_deserializer=response_deserializer)
        return _StreamStream(self, "stream_stream", method, kwargs)

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        """Connectivity of the *current* channel (a rebuilt channel starts without subscribers)."""
        self._channel().subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        """Stop connectivity callbacks on the current channel."""
        self._channel().unsubscribe(callback)

    def close(self) -> None:
        """Stop following the source; close the current and all retiring channels."""
        self._follower.close()
        with self._lock:
            retiring, self._retiring = self._retiring, {}
        for channel, timer in retiring.items():
            if timer is not None:
                timer.cancel()
            channel.close()
        self._channel().close()

    def __enter__(self) -> SpiffeChannel:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self.close()
        return None
