"""The relay's upstream side: one library watch per stream kind, published into feeds.

Each kind (X.509 SVIDs, X.509 bundles, JWT bundles) is one long-lived stream
to the agent through ``AsyncWorkloadClient``, which validates every message
and reconnects with backoff. A validated update is filtered, encoded and
serialized once and put into the kind's ``Feed``; errors become the status
downstream streams see:

* PermissionDenied upstream -> PermissionDenied downstream, at once (the
  agent withdrew the identity; clients must stop using it).
* Upstream lost (Unavailable, stream ended, deadline) -> the last good state
  is still served for ``hold`` seconds so a restarting agent goes unnoticed;
  after that, open streams end with Unavailable and new ones get Unavailable.
  Never InvalidArgument: Linkerd's proxy stops retrying on it.
* Unimplemented upstream -> Unimplemented (the agent lacks that RPC).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc

from spiffe_bridge.client.aio import AsyncWorkloadClient
from spiffe_bridge.errors import (
    InvalidArgumentError,
    NoIdentityError,
    UnimplementedError,
    ValidationError,
    WorkloadApiError,
)
from spiffe_bridge.jwt import JwtBundleSet
from spiffe_bridge.model import X509BundleSet, X509Context
from spiffe_bridge.relay import encode
from spiffe_bridge.relay.feed import Feed, Kind
from spiffe_bridge.relay.filter import SvidFilter
from spiffe_bridge.relay.observe import Observer, RelayEvent, Stage, notify
from spiffe_bridge.retry import Backoff

log = logging.getLogger("spiffe_bridge.relay")

#: Details sent downstream when the filter leaves no SVID (SPIRE's wording, plus why).
NO_ALLOWED_IDENTITY = "no identity issued: none of the upstream SVIDs is allowed by this relay"

Encoder = Callable[[Any], bytes | None]
Watch = Callable[..., AsyncIterator[Any]]


class Upstream:
    """Runs the three upstream watches on the relay's event loop and feeds the slots."""

    def __init__(
        self,
        address: str | None,
        feeds: Mapping[Kind, Feed],
        svid_filter: SvidFilter,
        *,
        hold: float,
        backoff: Backoff,
        observer: Observer | None = None,
    ) -> None:
        self._client = AsyncWorkloadClient(address, backoff=backoff, timeout=None)
        self._feeds = feeds
        self._filter = svid_filter
        self._hold = hold
        self._backoff = backoff
        self._observer = observer
        self._timers: dict[Kind, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def endpoint(self) -> str:
        """The upstream Workload API address in URI form."""
        return self._client.endpoint

    def start(self) -> None:
        """Open the three upstream streams (they wait for a missing socket)."""
        c = self._client
        watches: tuple[tuple[Kind, Watch, Encoder], ...] = (
            (Kind.X509_SVID, c.watch_x509_contexts, self._encode_svids),
            (Kind.X509_BUNDLES, c.watch_x509_bundles, _encode_x509_bundles),
            (Kind.JWT_BUNDLES, c.watch_jwt_bundles, _encode_jwt_bundles),
        )
        for kind, watch, encoder in watches:
            task = asyncio.create_task(self._run(kind, watch, encoder), name=f"relay-upstream-{kind}")
            self._tasks.append(task)

    async def close(self) -> None:
        """Cancel the upstream streams and close the channel."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await self._client.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # -- the watch loop -------------------------------------------------------------------

    async def _run(self, kind: Kind, watch: Watch, encoder: Encoder) -> None:
        while True:
            try:
                async for item in watch(on_error=lambda exc, k=kind: self._on_error(k, exc)):
                    self._on_update(kind, encoder(item), time.monotonic_ns())
                return  # the client was closed
            except WorkloadApiError as exc:  # only non-retryable errors leave the watch
                self._on_fatal(kind, exc)
            except Exception:  # a bug: keep the relay up and say so
                log.exception("relay: %s upstream watch failed", kind)
                self._feeds[kind].fail(grpc.StatusCode.UNAVAILABLE, f"relay error on the {kind} stream")
            await asyncio.sleep(self._backoff.maximum)

    def _encode_svids(self, context: X509Context) -> bytes | None:
        svids = self._filter.select(context)
        if not svids:
            return None
        return encode.x509_svid_response(context, svids).SerializeToString(deterministic=True)

    # -- state transitions ----------------------------------------------------------------

    def _on_update(self, kind: Kind, payload: bytes | None, received_ns: int) -> None:
        self._cancel_hold(kind)
        feed = self._feeds[kind]
        if payload is None:
            if feed.fail(grpc.StatusCode.PERMISSION_DENIED, NO_ALLOWED_IDENTITY):
                log.warning("relay: %s: upstream SVIDs are all filtered out", kind)
            return
        if not feed.publish(payload, received_ns):
            return
        version = feed.snapshot.version
        if self._observer is not None:
            notify(self._observer, RelayEvent(kind, Stage.RECEIVED, version, received_ns))
            notify(self._observer, RelayEvent(kind, Stage.PUBLISHED, version, time.monotonic_ns()))
        log.info("relay: %s update v%d from %s", kind, version, self.endpoint)

    def _on_error(self, kind: Kind, exc: Exception) -> None:
        """Called by the watch before each reconnect (and for rejected messages)."""
        if isinstance(exc, ValidationError):
            return  # the last good state stays; the client logged why
        feed = self._feeds[kind]
        if isinstance(exc, NoIdentityError):
            self._cancel_hold(kind)
            if feed.fail(grpc.StatusCode.PERMISSION_DENIED, exc.details or "no identity issued"):
                log.warning("relay: %s: upstream denied the identity; passing PermissionDenied on", kind)
            return
        reason = exc.details if isinstance(exc, WorkloadApiError) and exc.details else type(exc).__name__
        details = f"upstream Workload API {self.endpoint} unreachable: {reason}"
        if feed.snapshot.serving and self._hold > 0:
            if kind not in self._timers:
                loop = asyncio.get_running_loop()
                self._timers[kind] = loop.call_later(self._hold, self._hold_expired, kind, details)
                feed.mark_upstream_lost()
                log.info("relay: %s upstream lost; serving the last state for %.1fs", kind, self._hold)
            return
        self._lose(kind, details)

    def _on_fatal(self, kind: Kind, exc: WorkloadApiError) -> None:
        self._cancel_hold(kind)
        if isinstance(exc, UnimplementedError):
            self._feeds[kind].fail(grpc.StatusCode.UNIMPLEMENTED, exc.details or "not implemented upstream")
        elif isinstance(exc, InvalidArgumentError):
            # The relay's own request was refused; downstream must not stop retrying.
            self._lose(kind, f"upstream refused the relay's request: {exc.details}")
        else:
            self._lose(kind, str(exc))
        log.warning("relay: %s upstream stopped (%s); retrying in %.0fs", kind, exc, self._backoff.maximum)

    def _hold_expired(self, kind: Kind, details: str) -> None:
        self._timers.pop(kind, None)
        self._lose(kind, details)

    def _lose(self, kind: Kind, details: str) -> None:
        if self._feeds[kind].fail(grpc.StatusCode.UNAVAILABLE, details):
            log.warning("relay: %s: %s", kind, details)

    def _cancel_hold(self, kind: Kind) -> None:
        timer = self._timers.pop(kind, None)
        if timer is not None:
            timer.cancel()


def _encode_x509_bundles(bundles: X509BundleSet) -> bytes:
    return encode.x509_bundles_response(bundles).SerializeToString(deterministic=True)


def _encode_jwt_bundles(bundles: JwtBundleSet) -> bytes:
    return encode.jwt_bundles_response(bundles).SerializeToString(deterministic=True)
