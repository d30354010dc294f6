"""Authorize the client of every gRPC call by SPIFFE ID (server side).

Use with ``grpc_server_credentials`` (:mod:`.grpc_credentials`): gRPC core has
verified the client chain against the union of the bundles.
``SpiffeServerInterceptor`` (or ``AioSpiffeServerInterceptor``) then checks on
each RPC, from ``context.auth_context()``, that the client's leaf is an SVID
anchored in the bundle of *its own* trust domain and that the authorizer
accepts its ID. Refusals end the RPC with UNAUTHENTICATED (not a valid SVID of
a trusted trust domain) or PERMISSION_DENIED (authorizer said no), with the
peer's ID in the details. Verdicts are cached per (certificate, bundle set) and
dropped when the authorizer is replaced, so the cost is paid once per client
certificate rather than per RPC.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from cryptography import x509

from spiffe_bridge.model import X509Context
from spiffe_bridge.sources.protocols import X509SourceLike
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.tls._peer import spiffe_id_of, verify_peer
from spiffe_bridge.tls.authorize import Authorizer, PeerNotAuthorizedError, PeerRefusedError

_CACHE_SIZE = 1024


def _first(values: Any) -> bytes:
    """The first value of an auth-context property (gRPC gives a list of bytes), b"" when absent."""
    if not values:
        return b""
    if isinstance(values, bytes):
        return values
    return bytes(next(iter(values)))


def _pem_ders(blob: bytes) -> list[bytes]:
    """Each certificate of a PEM blob as DER (what ``verify_peer`` takes)."""
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


class _Authorizing:
    """What both interceptors hold: the peer checker, and its replaceable ``authorizer``."""

    def __init__(self, source: X509SourceLike, authorizer: Authorizer) -> None:
        self._checker = _PeerChecker(source, authorizer)

    @property
    def authorizer(self) -> Authorizer:
        """The rule clients must pass."""
        return self._checker.authorizer

    @authorizer.setter
    def authorizer(self, value: Authorizer) -> None:
        self._checker.authorizer = value


class SpiffeServerInterceptor(_Authorizing, grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Authorize every RPC's client by SPIFFE ID (sync ``grpc.server``).

    Use with ``grpc_server_credentials`` (client certificates required). The
    ``authorizer`` attribute may be replaced at any time.
    """

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


class AioSpiffeServerInterceptor(_Authorizing, grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authorize every RPC's client by SPIFFE ID (``grpc.aio.server``)."""

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
