"""gRPC mTLS from an X.509 source: server credentials, authorizing interceptors, rotating channels.

Server. ``grpc_server_credentials(source)`` uses gRPC's dynamic certificate
configuration: gRPC calls our fetcher before every new TLS handshake, and we
hand it a new configuration (SVID + all current bundles as client roots)
whenever the source's context changed. gRPC core verifies the client chain
against the union of the bundles; ``SpiffeServerInterceptor`` (or
``AioSpiffeServerInterceptor``) then checks on each RPC, from
``context.auth_context()``, that the client's leaf is an SVID anchored in the
bundle of *its own* trust domain and that the authorizer accepts its ID.
Refusals end the RPC with UNAUTHENTICATED (not a valid SVID of a trusted trust
domain) or PERMISSION_DENIED (authorizer said no), with the peer's ID in the
details. Verdicts are cached per (certificate, bundle set) and dropped when the
authorizer is replaced, so the cost is paid once per client certificate
rather than per RPC.

Client. gRPC Python's channel credentials are static, so ``SpiffeChannel``
builds a new secure channel whenever the source's context changes and hands
each call to the newest one (stubs created once keep working). The replaced
channel is closed ``retire_after`` seconds later, so calls in flight can
finish. Limits, stated plainly: gRPC Python offers the client no verify
callback and no auth context, so the client cannot check the *server's SPIFFE
ID*. What it can enforce: the server's chain must lead to the roots we pass
(only the bundle of ``server_trust_domain`` when given, which keeps other
trust domains' authorities from vouching for the server), and gRPC's own
hostname check requires the target host (or ``grpc.ssl_target_name_override``)
to be a DNS SAN of the server's SVID (SPIRE: ``-dns`` on the entry). For an
ID-level check of the server use the stdlib ``ssl`` helpers.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
from cryptography import x509

from spiffe_bridge.sources.protocols import X509SourceLike
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain
from spiffe_bridge.tls._follow import Follower, log
from spiffe_bridge.tls._peer import spiffe_id_of, verify_peer
from spiffe_bridge.tls.authorize import Authorizer, PeerNotAuthorizedError, PeerRefusedError
from spiffe_bridge.x509context import X509Context
from spiffe_bridge.x509svid import X509Svid

_CACHE_SIZE = 1024


def _svid(context: X509Context, svid_hint: str | None, spiffe_id: SpiffeId | str | None) -> X509Svid:
    return context.svid(hint=svid_hint, spiffe_id=spiffe_id)


def _roots_pem(context: X509Context, trust_domain: TrustDomain | str | None) -> bytes:
    if trust_domain is None:
        return b"".join(b.pem for b in context.bundles.values())
    bundle = context.bundle_for(trust_domain)
    if bundle is None:
        raise LookupError(f"no bundle for trust domain {trust_domain}: it is not trusted by this workload")
    return bundle.pem


# ----- server side -----
class _CertificateFetcher:
    """gRPC's per-handshake callback: a new configuration when the source's context changed."""

    def __init__(
        self, source: X509SourceLike, svid_hint: str | None, spiffe_id: SpiffeId | str | None
    ) -> None:
        self._source = source
        self._svid_hint = svid_hint
        self._spiffe_id = spiffe_id
        self._lock = threading.Lock()
        self._served: bytes | None = None

    def configuration(self, context: X509Context) -> grpc.ServerCertificateConfiguration:
        svid = _svid(context, self._svid_hint, self._spiffe_id)
        return grpc.ssl_server_certificate_configuration(
            [(svid.key_pem, svid.chain_pem)], root_certificates=_roots_pem(context, None)
        )

    def initial(self) -> grpc.ServerCertificateConfiguration:
        context = self._source.context
        with self._lock:
            config = self.configuration(context)
            self._served = context.digest
        return config

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            context = self._source.context
            with self._lock:
                if context.digest == self._served:
                    return None
                config = self.configuration(context)
                self._served = context.digest
            return config
        except Exception as exc:  # never fail a handshake over it: keep the current material
            log.warning("grpc server credentials: keeping the current certificate: %s", exc)
            return None


def grpc_server_credentials(
    source: X509SourceLike,
    *,
    svid_hint: str | None = None,
    spiffe_id: SpiffeId | str | None = None,
    require_client_auth: bool = True,
) -> grpc.ServerCredentials:
    """Server credentials presenting the current SVID and requiring client certificates.

    Rotations apply to new connections without restarting the server. Pair with
    ``SpiffeServerInterceptor`` to authorize clients by SPIFFE ID.
    """
    fetcher = _CertificateFetcher(source, svid_hint, spiffe_id)
    # grpc-stubs types the fetcher without the documented ``None`` ("no change") result
    fetch: Callable[[], grpc.ServerCertificateConfiguration] = fetcher  # type: ignore[assignment]
    return grpc.dynamic_ssl_server_credentials(
        fetcher.initial(), fetch, require_client_authentication=require_client_auth
    )


def _first(values: Any) -> bytes:
    if not values:
        return b""
    if isinstance(values, bytes):
        return values
    return bytes(next(iter(values)))


def _pem_ders(blob: bytes) -> list[bytes]:
    if not blob.strip():
        return []
    from cryptography.hazmat.primitives.serialization import Encoding

    return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(blob)]


class _PeerChecker:
    """Verdicts for the peers of RPCs: a SPIFFE ID, or a refusal; cached per certificate and bundles."""

    def __init__(self, source: X509SourceLike, authorizer: Authorizer) -> None:
        self._source = source
        self._authorizer = authorizer
        self._cache: OrderedDict[tuple[bytes, bytes, bytes], SpiffeId | PeerRefusedError] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def authorizer(self) -> Authorizer:
        return self._authorizer

    @authorizer.setter
    def authorizer(self, value: Authorizer) -> None:
        with self._lock:  # verdicts of the previous rule must not outlive it
            self._authorizer = value
            self._cache.clear()

    def verdict(self, auth_context: Any) -> SpiffeId | PeerRefusedError:
        leaf_pem = _first(auth_context.get("x509_pem_cert"))
        if not leaf_pem:
            return PeerRefusedError("peer presented no client certificate")
        chain_pem = _first(auth_context.get("x509_pem_cert_chain"))
        context = self._source.context
        key = (context.digest, leaf_pem, chain_pem)
        with self._lock:
            authorizer = self._authorizer
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        result = self._check(leaf_pem, chain_pem, context, authorizer)
        with self._lock:
            if authorizer is self._authorizer:
                self._cache[key] = result
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return result

    @staticmethod
    def _check(
        leaf_pem: bytes, chain_pem: bytes, context: X509Context, authorizer: Authorizer
    ) -> SpiffeId | PeerRefusedError:
        try:
            ders = _pem_ders(leaf_pem)
            if len(ders) != 1:
                return PeerRefusedError("peer certificate could not be read")
            peer_id = verify_peer(
                ders[0], context.bundles, intermediates_der=_pem_ders(chain_pem), check_times=False
            )
            authorizer(peer_id)
            return peer_id
        except PeerRefusedError as exc:
            return exc
        except ValueError as exc:
            return PeerRefusedError(f"peer certificate chain could not be read: {exc}")

    @staticmethod
    def status(refusal: PeerRefusedError) -> grpc.StatusCode:
        if isinstance(refusal, PeerNotAuthorizedError):
            return grpc.StatusCode.PERMISSION_DENIED
        return grpc.StatusCode.UNAUTHENTICATED


_HANDLER_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


def _rewrap(handler: Any, wrap: Callable[[Callable[..., Any], bool], Callable[..., Any]]) -> Any:
    """The same handler with its behaviour wrapped (``wrap(behavior, response_streaming)``)."""
    for attr, factory in _HANDLER_KINDS:
        behavior = getattr(handler, attr, None)
        if behavior is not None:
            return factory(
                wrap(behavior, bool(handler.response_streaming)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class SpiffeServerInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Authorize every RPC's client by SPIFFE ID (sync ``grpc.server``).

    Use with ``grpc_server_credentials`` (client certificates required). The
    ``authorizer`` attribute may be replaced at any time.
    """

    def __init__(self, source: X509SourceLike, authorizer: Authorizer) -> None:
        self._checker = _PeerChecker(source, authorizer)

    @property
    def authorizer(self) -> Authorizer:
        """The rule clients must pass."""
        return self._checker.authorizer

    @authorizer.setter
    def authorizer(self, value: Authorizer) -> None:
        self._checker.authorizer = value

    def _check(self, context: grpc.ServicerContext) -> None:
        verdict = self._checker.verdict(context.auth_context())
        if isinstance(verdict, PeerRefusedError):
            context.abort(self._checker.status(verdict), str(verdict))

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        """Wrap the method's behaviour so the peer is checked before it runs."""
        handler = continuation(handler_call_details)
        if handler is None:
            return None

        def wrap(behavior: Callable[..., Any], _streaming: bool) -> Callable[..., Any]:
            def checked(request: Any, context: grpc.ServicerContext) -> Any:
                self._check(context)
                return behavior(request, context)

            return checked

        return _rewrap(handler, wrap)


class AioSpiffeServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authorize every RPC's client by SPIFFE ID (``grpc.aio.server``)."""

    def __init__(self, source: X509SourceLike, authorizer: Authorizer) -> None:
        self._checker = _PeerChecker(source, authorizer)

    @property
    def authorizer(self) -> Authorizer:
        """The rule clients must pass."""
        return self._checker.authorizer

    @authorizer.setter
    def authorizer(self, value: Authorizer) -> None:
        self._checker.authorizer = value

    async def _check(self, context: Any) -> None:
        verdict = self._checker.verdict(context.auth_context())
        if isinstance(verdict, PeerRefusedError):
            await context.abort(self._checker.status(verdict), str(verdict))

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        """Wrap the method's behaviour so the peer is checked before it runs."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None

        def wrap(behavior: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
            if streaming:

                async def checked_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                    await self._check(context)
                    result = behavior(request, context)
                    if inspect.isasyncgen(result):
                        async for item in result:
                            yield item
                    elif inspect.isawaitable(result):
                        await result  # a handler writing with context.write()
                    else:
                        for item in result:
                            yield item

                return checked_stream

            async def checked(request: Any, context: Any) -> Any:
                await self._check(context)
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result

            return checked

        return _rewrap(handler, wrap)


def grpc_peer_spiffe_id(context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]) -> SpiffeId:
    """The SPIFFE ID in the client's certificate for this RPC (server side).

    Trustworthy when a Spiffe*ServerInterceptor is installed: it has verified
    the certificate before the handler runs. LookupError without a client certificate.
    """
    leaf_pem = _first(context.auth_context().get("x509_pem_cert"))
    if not leaf_pem:
        raise LookupError("the peer presented no client certificate")
    return spiffe_id_of(x509.load_pem_x509_certificate(leaf_pem))


# ----- client side -----
def grpc_channel_credentials(
    source: X509SourceLike | X509Context,
    *,
    server_trust_domain: TrustDomain | str | None = None,
    svid_hint: str | None = None,
    spiffe_id: SpiffeId | str | None = None,
) -> grpc.ChannelCredentials:
    """Static channel credentials from the current context: our SVID, and as roots the bundle
    of ``server_trust_domain`` (all bundles when None). Use ``SpiffeChannel`` to follow rotations."""
    context = source if isinstance(source, X509Context) else source.context
    svid = _svid(context, svid_hint, spiffe_id)
    return grpc.ssl_channel_credentials(
        root_certificates=_roots_pem(context, server_trust_domain),
        private_key=svid.key_pem,
        certificate_chain=svid.chain_pem,
    )


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
