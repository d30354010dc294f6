"""The downstream side: a spec-compliant Workload API served from the feeds.

Every RPC first checks the security header itself (InvalidArgument "security
header missing from request", as SPIRE answers). A stream then sends the
feed's current snapshot at once and, on every version change, the newest
one; when the feed fails, the stream ends with the feed's status code. Only
right after the relay started, before upstream ever answered, does a new
stream wait (``startup_wait``) for the first state before ending Unavailable. The
response bytes were serialized once per update, so a stream's only work is
``context.write`` of shared bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Mapping
from typing import Any

import grpc
import grpc.aio

from spiffe_bridge._wire import MISSING_HEADER, Rpc, has_header, workload_api_handler
from spiffe_bridge.relay.feed import Feed, Kind
from spiffe_bridge.relay.forward import Forwarder
from spiffe_bridge.relay.observe import Observer, RelayEvent, Stage, notify

Context = grpc.aio.ServicerContext[Any, Any]


class RelayServicer:
    """Handlers of the five Workload API RPCs, backed by feeds and a forwarder."""

    def __init__(
        self,
        feeds: Mapping[Kind, Feed],
        forwarder: Forwarder,
        observer: Observer | None,
        startup_wait: float = 0.0,
    ) -> None:
        self._feeds = feeds
        self._forwarder = forwarder
        self._observer = observer
        self._startup_wait = startup_wait
        self._stream_ids = itertools.count(1)
        self.rejected = 0

    async def _check_header(self, context: Context) -> None:
        if not has_header(context.invocation_metadata()):
            self.rejected += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, MISSING_HEADER)

    async def stream(self, kind: Kind, context: Context) -> None:
        """Send the current state now and every change after; end with the feed's failure."""
        await self._check_header(context)
        feed = self._feeds[kind]
        stream_id = next(self._stream_ids)
        observer = self._observer
        feed.open_streams += 1
        try:
            snapshot = feed.snapshot
            if snapshot.version == 0 and self._startup_wait > 0:
                # The relay just started and upstream has not answered yet: give it a moment
                # rather than failing a client that merely raced the relay's own start.
                with contextlib.suppress(TimeoutError):
                    snapshot = await asyncio.wait_for(feed.wait_newer(0), self._startup_wait)
            while True:
                if snapshot.payload is None:
                    await context.abort(snapshot.code, snapshot.details)
                await context.write(snapshot.payload)
                feed.messages_sent += 1
                if observer is not None:
                    event = RelayEvent(kind, Stage.SENT, snapshot.version, time.monotonic_ns(), stream_id)
                    notify(observer, event)
                snapshot = await feed.wait_newer(snapshot.version)
        finally:
            feed.open_streams -= 1

    async def fetch_jwt_svid(self, request: bytes, context: Context) -> bytes:
        """FetchJWTSVID, forwarded upstream."""
        await self._check_header(context)
        return await self._forwarder.fetch_jwt_svid(request, context)

    async def validate_jwt_svid(self, request: bytes, context: Context) -> bytes:
        """ValidateJWTSVID, forwarded upstream."""
        await self._check_header(context)
        return await self._forwarder.validate_jwt_svid(request, context)

    def generic_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """The service's handlers; no (de)serializers, so bytes pass straight through."""

        def streaming(kind: Kind) -> grpc.RpcMethodHandler[Any, Any]:
            async def handler(request: bytes, context: Context) -> None:
                await self.stream(kind, context)

            return grpc.unary_stream_rpc_method_handler(handler)

        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {kind.value: streaming(kind) for kind in Kind}
        handlers[Rpc.FETCH_JWT_SVID] = grpc.unary_unary_rpc_method_handler(self.fetch_jwt_svid)
        handlers[Rpc.VALIDATE_JWT_SVID] = grpc.unary_unary_rpc_method_handler(self.validate_jwt_svid)
        return workload_api_handler(handlers)  # also under the qualified alias (_wire.py)
