"""The relay's upstream side: one library watch per stream kind, published into feeds.

Each kind (X.509 SVIDs, X.509 bundles, JWT bundles) is one long-lived stream
to the agent through ``AsyncWorkloadClient``, which reconnects with backoff.
An update goes into the kind's ``Feed`` as the very bytes the agent sent
(nothing re-encoded; fields this library does not know pass through); only
when the filter removes an SVID is the response rebuilt without it.

Every update is validated with the library's model. By default that happens
right after the downstream streams were handed the bytes, in parallel with
the clients' own checks, so the relay adds no validation time to a rotation;
an update that fails is then taken back: what was served before it is put
back (the last valid state, or the error streams were ending with; if nothing
was served yet, streams end Unavailable) and the same bytes are not forwarded
again. With ``verify_first`` an update is validated before any
client sees it, at the cost of that time (about 1 ms per rotation).

Errors become the status downstream streams see:

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
from collections.abc import Mapping
from typing import Any

import grpc

from spiffe_bridge.client._core import (
    JWT_BUNDLES,
    X509_BUNDLES,
    X509_CONTEXTS,
    StreamSpec,
    Unvalidated,
    unvalidated,
)
from spiffe_bridge.client.aio import AsyncWorkloadClient
from spiffe_bridge.errors import (
    InvalidArgumentError,
    NoIdentityError,
    UnimplementedError,
    ValidationError,
    WorkloadApiError,
)
from spiffe_bridge.relay.feed import Feed, Kind, Snapshot
from spiffe_bridge.relay.filter import SvidFilter
from spiffe_bridge.relay.observe import Observer, RelayEvent, Stage, notify
from spiffe_bridge.retry import Backoff

log = logging.getLogger("spiffe_bridge.relay")

#: Details sent downstream when the filter leaves no SVID (SPIRE's wording, plus why).
NO_ALLOWED_IDENTITY = "no identity issued: none of the upstream SVIDs is allowed by this relay"

#: Refusal details when the first update of a kind fails validation (there is nothing to fall back to).
INVALID_UPSTREAM = "upstream Workload API sent an invalid {what} update: {error}"

_KINDS: tuple[tuple[Kind, StreamSpec[Any]], ...] = (
    (Kind.X509_SVID, X509_CONTEXTS),
    (Kind.X509_BUNDLES, X509_BUNDLES),
    (Kind.JWT_BUNDLES, JWT_BUNDLES),
)


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
        verify_first: bool = False,
        observer: Observer | None = None,
    ) -> None:
        self._client = AsyncWorkloadClient(address, backoff=backoff, timeout=None)
        self._feeds = feeds
        self._filter = svid_filter
        self._hold = hold
        self._backoff = backoff
        self._verify_first = verify_first
        self._observer = observer
        self._timers: dict[Kind, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        #: Per kind, the payload of the last update that failed (not forwarded again).
        self._invalid: dict[Kind, bytes] = {}

    @property
    def endpoint(self) -> str:
        """The upstream Workload API address in URI form."""
        return self._client.endpoint

    def start(self) -> None:
        """Open the three upstream streams (they wait for a missing socket)."""
        for kind, spec in _KINDS:
            task = asyncio.create_task(self._run(kind, spec), name=f"relay-upstream-{kind}")
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

    async def _run(self, kind: Kind, spec: StreamSpec[Any]) -> None:
        def on_error(exc: Exception) -> None:
            self._on_error(kind, exc)

        while True:
            try:
                async for raw in self._client.watch(unvalidated(spec), on_error):
                    await self._on_update(kind, spec, raw, time.monotonic_ns())
                return  # the client was closed
            except WorkloadApiError as exc:  # only non-retryable errors leave the watch
                self._on_fatal(kind, exc)
            except Exception:  # a bug: keep the relay up and say so
                log.exception("relay: %s upstream watch failed", kind)
                self._feeds[kind].fail(grpc.StatusCode.UNAVAILABLE, f"relay error on the {kind} stream")
            await asyncio.sleep(self._backoff.maximum)

    # -- state transitions ----------------------------------------------------------------

    async def _on_update(self, kind: Kind, spec: StreamSpec[Any], raw: Unvalidated, received_ns: int) -> None:
        """Serve one upstream message: forward it, validate it, take it back if it is invalid."""
        self._feeds[kind].upstream_updates += 1
        self._cancel_hold(kind)
        payload = self._payload(kind, raw)
        if payload is not None and payload == self._invalid.get(kind):
            return  # refused before; the agent re-sent it
        early = payload is not None and not self._verify_first
        before = self._feeds[kind].snapshot
        if early:
            self._serve(kind, payload, received_ns)
            await asyncio.sleep(0)  # the woken streams hand the bytes to gRPC before we validate
        try:
            spec.decode(raw.message)
        except ValidationError as exc:
            if payload is not None:
                self._invalid[kind] = payload
            self._refuse(kind, spec, exc, before if early else None)
            return
        self._invalid.pop(kind, None)
        if not early:
            self._serve(kind, payload, received_ns)

    def _payload(self, kind: Kind, raw: Unvalidated) -> bytes | None:
        """What downstream gets for ``raw``: its bytes, filtered; None when no SVID is allowed."""
        if kind is not Kind.X509_SVID:
            return raw.data  # bundles are public
        return self._filter.filter_x509_response(raw.message, raw.data)

    def _serve(self, kind: Kind, payload: bytes | None, received_ns: int) -> None:
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
        if log.isEnabledFor(logging.INFO):
            # Queued behind the streams' wake-ups: they write before the log line is formatted.
            asyncio.get_running_loop().call_soon(
                log.info, "relay: %s update v%d from %s", kind, version, self.endpoint
            )

    def _refuse(
        self, kind: Kind, spec: StreamSpec[Any], exc: ValidationError, before: Snapshot | None
    ) -> None:
        """An update failed validation; ``before``: what was served until it was forwarded, to put back."""
        feed = self._feeds[kind]
        feed.invalid_updates += 1
        log.warning(
            "relay: %s: upstream sent an invalid update (%s); %s",
            kind,
            exc,
            "not forwarded" if before is None else "taken back",
        )
        if before is None:
            return
        if before.payload is not None:
            self._serve(kind, before.payload, time.monotonic_ns())
        elif before.version == 0:  # nothing was served yet: say why there is still nothing
            feed.fail(grpc.StatusCode.UNAVAILABLE, INVALID_UPSTREAM.format(what=spec.what, error=exc))
        else:
            feed.fail(before.code, before.details)

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
