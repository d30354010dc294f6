"""gRPC handlers of the five Workload API RPCs, backed by the agent's ``AgentCalls`` interface.

The handlers are registered through a generic handler (not the generated
``add_..._to_server``) so that a fault can put raw bytes on the wire that are
not even valid protobuf.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge._wire import MISSING_HEADER, Rpc, has_header, workload_api_handler
from spiffe_bridge.errors import JwtSvidError
from spiffe_bridge.loglist import capped

from .calls import AgentCalls, CallHandle, Outgoing, Signal
from .faults import RawResponse
from .identity import split_spiffe_id

NO_IDENTITY = "no identity issued"


def _serialize(message: RawResponse) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


class WorkloadAPIServicer:
    """Implements SpiffeWorkloadAPI on top of the agent's call interface, faults included."""

    def __init__(self, agent: AgentCalls) -> None:
        self._agent = agent
        self._generation = agent.generation  # this server's; stop() makes it stale
        self._active = 0
        self._idle = threading.Condition()

    # ----- RPCs -----
    def FetchX509SVID(
        self, request: pb.X509SVIDRequest, context: grpc.ServicerContext
    ) -> Iterator[RawResponse]:
        """Stream X509-SVIDs with bundles; one full-state message per change."""
        return self._stream(Rpc.FETCH_X509_SVID, context)

    def FetchX509Bundles(
        self, request: pb.X509BundlesRequest, context: grpc.ServicerContext
    ) -> Iterator[RawResponse]:
        """Stream X.509 bundles of the own and federated trust domains."""
        return self._stream(Rpc.FETCH_X509_BUNDLES, context)

    def FetchJWTBundles(
        self, request: pb.JWTBundlesRequest, context: grpc.ServicerContext
    ) -> Iterator[RawResponse]:
        """Stream JWKS bundles of the own and federated trust domains."""
        return self._stream(Rpc.FETCH_JWT_BUNDLES, context)

    def FetchJWTSVID(self, request: pb.JWTSVIDRequest, context: grpc.ServicerContext) -> RawResponse:
        """Mint JWT-SVIDs for the audience (all identities, or the one asked for)."""
        rpc = Rpc.FETCH_JWT_SVID
        raw = self._admit(rpc, context)
        if raw is None:
            if not request.audience:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
            if request.spiffe_id:
                try:
                    split_spiffe_id(request.spiffe_id)
                except ValueError as err:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid requested SPIFFE ID: {err}")
            if self._agent.denied:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, NO_IDENTITY)
            try:
                raw = self._agent.jwt_svid_response(list(request.audience), request.spiffe_id)
            except LookupError:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, NO_IDENTITY)
            ids = capped(s.spiffe_id for s in raw.svids)
            self._agent.record_sent(rpc, f"JWT-SVIDs for [{ids}] aud={list(request.audience)}")
        else:
            self._agent.record_sent(rpc, "raw response")
        return raw

    def ValidateJWTSVID(
        self, request: pb.ValidateJWTSVIDRequest, context: grpc.ServicerContext
    ) -> RawResponse:
        """Verify a JWT-SVID against the agent's own and federated JWT keys."""
        rpc = Rpc.VALIDATE_JWT_SVID
        raw = self._admit(rpc, context)
        if raw is None:
            if not request.audience:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
            if not request.svid:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "svid must be specified")
            try:
                spiffe_id, claims = self._agent.validate_jwt_svid(request.svid, request.audience)
            except JwtSvidError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            response = pb.ValidateJWTSVIDResponse(spiffe_id=spiffe_id)
            response.claims.update(claims)
            raw = response
        self._agent.record_sent(rpc, "validation result")
        return raw

    # ----- shared -----
    def _admit(self, rpc: Rpc, context: grpc.ServicerContext) -> RawResponse | None:
        """Count the call, enforce the security header, apply injected errors.

        Returns a scripted raw response if one is queued for this call.
        """
        agent = self._agent
        agent.count_call(rpc)
        if not has_header(context.invocation_metadata()):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, MISSING_HEADER)
        error = agent.take_error(rpc)
        if error is not None:
            context.abort(error.code, error.message)
        if rpc.streaming:
            return None
        call = self._open(rpc, context)
        if call is None or not agent.await_first(call):
            context.abort(grpc.StatusCode.UNAVAILABLE, "dev agent stopping")
        return agent.take_scripted_response(rpc)

    def _open(self, rpc: Rpc, context: grpc.ServicerContext) -> CallHandle | None:
        """A handle that ends when the client goes (ending a hang too); None if it has gone."""
        agent = self._agent
        opened = agent.open_call(rpc, self._generation)
        if opened is None:  # accepted just before stop(); the client already saw the drop
            context.abort(grpc.StatusCode.UNAVAILABLE, "dev agent stopping")
        handle = opened
        if not context.add_callback(lambda: agent.close_call(handle)):
            agent.close_call(handle)
            return None
        return handle

    def _stream(self, rpc: Rpc, context: grpc.ServicerContext) -> Iterator[RawResponse]:
        agent = self._agent
        self._admit(rpc, context)
        if agent.denied:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, NO_IDENTITY)
        handle = self._open(rpc, context)
        if handle is None:
            return
        try:
            if not agent.await_first(handle):
                return
            while True:
                item = agent.next_outgoing(handle)
                if item is Signal.END:
                    return
                if item is Signal.DENY:
                    context.abort(grpc.StatusCode.PERMISSION_DENIED, NO_IDENTITY)
                assert isinstance(item, Outgoing)
                agent.record_sent(rpc, item.summary, handle.id)
                yield item.payload
                if agent.closes_after_message(rpc):
                    return
        finally:
            agent.close_call(handle)

    # ----- handler bookkeeping so stop() can wait for handler threads -----
    def _tracked(self, fn: Callable[[Any, grpc.ServicerContext], Any], streaming: bool) -> Callable[..., Any]:
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            self._enter()
            try:
                return fn(request, context)
            finally:
                self._exit()

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            self._enter()
            try:
                yield from fn(request, context)
            finally:
                self._exit()

        return stream if streaming else unary

    def _enter(self) -> None:
        with self._idle:
            self._active += 1

    def _exit(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no handler is running (after the server stopped)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def generic_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """gRPC handler for the service, with a serializer that passes raw bytes through."""
        ser = _serialize
        t = self._tracked
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            Rpc.FETCH_X509_SVID: grpc.unary_stream_rpc_method_handler(
                t(self.FetchX509SVID, True), pb.X509SVIDRequest.FromString, ser
            ),
            Rpc.FETCH_X509_BUNDLES: grpc.unary_stream_rpc_method_handler(
                t(self.FetchX509Bundles, True), pb.X509BundlesRequest.FromString, ser
            ),
            Rpc.FETCH_JWT_SVID: grpc.unary_unary_rpc_method_handler(
                t(self.FetchJWTSVID, False), pb.JWTSVIDRequest.FromString, ser
            ),
            Rpc.FETCH_JWT_BUNDLES: grpc.unary_stream_rpc_method_handler(
                t(self.FetchJWTBundles, True), pb.JWTBundlesRequest.FromString, ser
            ),
            Rpc.VALIDATE_JWT_SVID: grpc.unary_unary_rpc_method_handler(
                t(self.ValidateJWTSVID, False), pb.ValidateJWTSVIDRequest.FromString, ser
            ),
        }
        return workload_api_handler(handlers)  # also under the qualified alias (_wire.py)
