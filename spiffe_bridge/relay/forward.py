"""Unary calls the relay passes through: FetchJWTSVID and ValidateJWTSVID.

JWT-SVIDs are minted per call, so there is nothing to cache: each downstream
call becomes one upstream call with the security header added, the caller's
deadline carried over, and the upstream status code handed back unchanged.
Request and response bytes pass through untouched, except that a filtered
relay drops JWT-SVIDs of identities the downstream may not see.
"""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge._wire import METADATA, Rpc
from spiffe_bridge.address import Endpoint
from spiffe_bridge.relay.filter import SvidFilter
from spiffe_bridge.retry import CHANNEL_OPTIONS

#: Upper bound for a forwarded call when the caller set no deadline.
MAX_FORWARD_TIMEOUT = 30.0


class Forwarder:
    """Forwards the two unary RPCs on its own channel to the upstream Workload API."""

    def __init__(self, endpoint: Endpoint, svid_filter: SvidFilter) -> None:
        self._channel = grpc.aio.insecure_channel(endpoint.grpc_target, options=CHANNEL_OPTIONS)
        # No serializers: request and response bytes pass through as they are.
        self._fetch_jwt: Any = self._channel.unary_unary(Rpc.FETCH_JWT_SVID.path, None, None)
        self._validate_jwt: Any = self._channel.unary_unary(Rpc.VALIDATE_JWT_SVID.path, None, None)
        self._filter = svid_filter
        self.calls = 0

    async def fetch_jwt_svid(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """Mint JWT-SVIDs upstream; a filtered relay returns only the allowed identities."""
        response: bytes = await self._call(self._fetch_jwt, request, context)
        if not self._filter.active:
            return response
        message = pb.JWTSVIDResponse.FromString(response)
        allowed = self._filter.select(message.svids)
        if not allowed:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        if len(allowed) == len(message.svids):
            return response
        return pb.JWTSVIDResponse(svids=allowed).SerializeToString()

    async def validate_jwt_svid(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """Validate a JWT-SVID upstream (bundles are public, so no filtering applies)."""
        response: bytes = await self._call(self._validate_jwt, request, context)
        return response

    async def _call(self, method: Any, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.calls += 1
        remaining = context.time_remaining()
        timeout = MAX_FORWARD_TIMEOUT if remaining is None else min(remaining, MAX_FORWARD_TIMEOUT)
        try:
            return await method(request, metadata=METADATA, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")

    async def close(self) -> None:
        """Close the upstream channel (in-flight calls are cancelled)."""
        await self._channel.close(None)
