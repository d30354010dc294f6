"""The relay's upstream side: one library watch per stream kind, published into feeds.

Each kind (X.509 SVIDs, X.509 bundles, JWT bundles) is one long-lived stream
to the agent through ``AsyncWorkloadClient``, which reconnects with backoff.
An update goes into the kind's ``Feed`` as the very bytes the agent sent
(nothing re-encoded; fields this library does not know pass through); only
when the filter removes an SVID is the response rebuilt without it.

Every update is validated with the library's model before any client sees it
(the relay is a trust boundary: a client that does not validate must never
get what the library would reject). An update that fails is not forwarded,
and the same bytes are not forwarded again if the agent re-sends them. With
``forward_before_verify`` (the fast path) the streams are handed the bytes
first and validation runs in parallel with the clients' own checks, saving
that time per rotation; an update that fails is then taken back: what was
served before it is put back (the last valid state, or the error streams were
ending with; if nothing was served yet, streams end Unavailable), but a
client may already have used it.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from spiffe_bridge.client.aio import AsyncWorkloadClient
from spiffe_bridge.client.streams import (
    JWT_BUNDLES,
    X509_BUNDLES,
    X509_CONTEXTS,
    StreamSpec,
    Unvalidated,
    unvalidated,
)
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


@dataclass(frozen=True)
class Outlet:
    """What one relay socket serves: its filter, and one feed per stream kind."""

    filter: SvidFilter
    feeds: Mapping[Kind, Feed]

    def payload(self, kind: Kind, raw: Unvalidated) -> bytes | None:
        """What this socket's clients get for ``raw``: its bytes, filtered; None when nothing is allowed."""
        if kind is not Kind.X509_SVID:
            return raw.data  # bundles are public
        return self.filter.filter_x509_response(raw.message, raw.data)


class Upstream:
    """Runs the three upstream watches on the relay's event loop and feeds every outlet's slots."""

    def __init__(
        self,
        address: str | None,
        outlets: Sequence[Outlet],
        *,
        hold: float,
        backoff: Backoff,
        forward_before_verify: bool = False,
        observer: Observer | None = None,
    ) -> None:
        self._client = AsyncWorkloadClient(address, backoff=backoff, timeout=None)
        self._outlets = tuple(outlets)
        self._hold = hold
        self._backoff = backoff
        self._forward_before_verify = forward_before_verify
        self._observer = observer
        self._timers: dict[Kind, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        #: Per kind, the bytes of the last upstream message that failed (not forwarded again).
        self._invalid: dict[Kind, bytes] = {}
        #: Per kind, when (monotonic) upstream was lost, to log how long the outage lasted.
        self._lost_at: dict[Kind, float] = {}

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

    def _feeds(self, kind: Kind) -> list[Feed]:
        return [outlet.feeds[kind] for outlet in self._outlets]

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
                for feed in self._feeds(kind):
                    feed.fail(grpc.StatusCode.UNAVAILABLE, f"relay error on the {kind} stream")
            await asyncio.sleep(self._backoff.maximum)

    # -- state transitions ----------------------------------------------------------------

    async def _on_update(self, kind: Kind, spec: StreamSpec[Any], raw: Unvalidated, received_ns: int) -> None:
        """Serve one upstream message once it is valid (or forward, validate, take back if invalid)."""
        for feed in self._feeds(kind):
            feed.upstream_updates += 1
        self._cancel_hold(kind)
        lost_at = self._lost_at.pop(kind, None)
        if lost_at is not None:
            outage = time.monotonic() - lost_at
            fields = {"stream": str(kind), "address": self.endpoint, "duration_s": round(outage, 3)}
            log.info("relay: %s upstream is back after %.1fs", kind, outage, extra=fields)
        if raw.data == self._invalid.get(kind):
            return  # refused before; the agent re-sent it
        payloads = [outlet.payload(kind, raw) for outlet in self._outlets]
        # With forward_before_verify, outlets with something to show get it now, with what
        # they served before, to put back if validation fails.
        forwarded: list[tuple[Feed, Snapshot]] = []
        if self._forward_before_verify:
            for outlet, payload in zip(self._outlets, payloads, strict=True):
                if payload is not None:
                    feed = outlet.feeds[kind]
                    forwarded.append((feed, feed.snapshot))
                    self._serve(feed, payload, received_ns)
        if forwarded:
            await asyncio.sleep(0)  # the woken streams hand the bytes to gRPC before we validate
        try:
            spec.decode(raw.message)
        except ValidationError as exc:
            self._invalid[kind] = raw.data
            self._refuse(kind, spec, exc, forwarded)
            return
        self._invalid.pop(kind, None)
        served = {feed for feed, _ in forwarded}
        for outlet, payload in zip(self._outlets, payloads, strict=True):
            if outlet.feeds[kind] not in served:
                self._serve(outlet.feeds[kind], payload, received_ns)

    def _serve(self, feed: Feed, payload: bytes | None, received_ns: int) -> None:
        if payload is None:
            if feed.fail(grpc.StatusCode.PERMISSION_DENIED, NO_ALLOWED_IDENTITY):
                log.warning("relay: %s: upstream SVIDs are all filtered out", feed.kind)
            return
        if not feed.publish(payload, received_ns):
            return
        version = feed.snapshot.version
        if self._observer is not None:
            notify(self._observer, RelayEvent(feed.kind, Stage.RECEIVED, version, received_ns))
            notify(self._observer, RelayEvent(feed.kind, Stage.PUBLISHED, version, time.monotonic_ns()))
        if log.isEnabledFor(logging.INFO):
            # Queued behind the streams' wake-ups: they write before the log line is formatted.
            fields = {"stream": str(feed.kind), "version": version, "address": self.endpoint}
            asyncio.get_running_loop().call_soon(
                lambda: log.info(
                    "relay: %s update v%d from %s", feed.kind, version, self.endpoint, extra=fields
                )
            )

    def _refuse(
        self, kind: Kind, spec: StreamSpec[Any], exc: ValidationError, forwarded: list[tuple[Feed, Snapshot]]
    ) -> None:
        """An update failed validation; put back what each feed it reached served before it."""
        for feed in self._feeds(kind):
            feed.invalid_updates += 1
        log.warning(
            "relay: %s: upstream sent an invalid update (%s); %s",
            kind,
            exc,
            "taken back" if forwarded else "not forwarded",
            extra={"stream": str(kind), "address": self.endpoint, "error": str(exc)},
        )
        for feed, before in forwarded:
            if before.payload is not None:
                self._serve(feed, before.payload, time.monotonic_ns())
            elif before.version == 0:  # nothing was served yet: say why there is still nothing
                feed.fail(grpc.StatusCode.UNAVAILABLE, INVALID_UPSTREAM.format(what=spec.what, error=exc))
            else:
                feed.fail(before.code, before.details)

    def _on_error(self, kind: Kind, exc: Exception) -> None:
        """Called by the watch before each reconnect (and for rejected messages)."""
        if isinstance(exc, ValidationError):
            return  # the last good state stays; the client logged why
        fields = self._lost(kind, exc)
        if isinstance(exc, NoIdentityError):
            self._cancel_hold(kind)
            denied = [feed.fail(grpc.StatusCode.PERMISSION_DENIED, exc.details or "no identity issued")
                      for feed in self._feeds(kind)]  # fmt: skip
            if any(denied):
                msg = "relay: %s: upstream denied the identity; passing PermissionDenied on"
                log.warning(msg, kind, extra=fields)
            return
        reason = exc.details if isinstance(exc, WorkloadApiError) and exc.details else type(exc).__name__
        details = f"upstream Workload API {self.endpoint} unreachable: {reason}"
        held = False
        for feed in self._feeds(kind):
            if feed.snapshot.serving and self._hold > 0:
                held = True
                feed.mark_upstream_lost()
            elif feed.fail(grpc.StatusCode.UNAVAILABLE, details):
                log.warning("relay: %s: %s", kind, details, extra=fields)
        if held and kind not in self._timers:
            loop = asyncio.get_running_loop()
            self._timers[kind] = loop.call_later(self._hold, self._hold_expired, kind, details)
            msg = "relay: %s upstream lost (%s); serving the last state for %.1fs"
            log.warning(msg, kind, reason, self._hold, extra=fields)

    def _lost(self, kind: Kind, exc: Exception) -> dict[str, Any]:
        """Note when upstream was lost (first error since the last update); the log fields of ``exc``."""
        self._lost_at.setdefault(kind, time.monotonic())
        code = exc.code.name if isinstance(exc, WorkloadApiError) and exc.code is not None else None
        return {"stream": str(kind), "address": self.endpoint, "grpc_code": code}

    def _on_fatal(self, kind: Kind, exc: WorkloadApiError) -> None:
        self._cancel_hold(kind)
        if isinstance(exc, UnimplementedError):
            for feed in self._feeds(kind):
                feed.fail(grpc.StatusCode.UNIMPLEMENTED, exc.details or "not implemented upstream")
        elif isinstance(exc, InvalidArgumentError):
            # The relay's own request was refused; downstream must not stop retrying.
            self._lose(kind, f"upstream refused the relay's request: {exc.details}")
        else:
            self._lose(kind, str(exc))
        msg = "relay: %s upstream stopped (%s); retrying in %.0fs"
        log.warning(msg, kind, exc, self._backoff.maximum, extra=self._lost(kind, exc))

    def _hold_expired(self, kind: Kind, details: str) -> None:
        self._timers.pop(kind, None)
        self._lose(kind, details)

    def _lose(self, kind: Kind, details: str) -> None:
        changed = [feed.fail(grpc.StatusCode.UNAVAILABLE, details) for feed in self._feeds(kind)]
        if any(changed):
            log.warning("relay: %s: %s", kind, details)

    def _cancel_hold(self, kind: Kind) -> None:
        timer = self._timers.pop(kind, None)
        if timer is not None:
            timer.cancel()
