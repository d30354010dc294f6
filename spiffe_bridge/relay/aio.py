"""AsyncRelay: the upstream feeds, the forwarder and the downstream server, on one event loop.

Threading model: everything (upstream streams, downstream streams, forwarded
calls, hold timers) runs on a single asyncio loop with ``grpc.aio``. A
rotation reaches N downstream streams as one ``Event.set()`` followed by N
writes of the same bytes (the agent's) on that loop: no thread hand-offs,
no per-client locks, no per-client upstream calls. ``Relay`` (runner.py) runs
this on a background thread for synchronous code; the CLI runs it directly.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

import grpc
import grpc.aio

from spiffe_bridge import socketfile
from spiffe_bridge.address import resolve
from spiffe_bridge.relay import sockets
from spiffe_bridge.relay.feed import Feed, Kind, Snapshot
from spiffe_bridge.relay.filter import SvidFilter
from spiffe_bridge.relay.forward import Forwarder
from spiffe_bridge.relay.listener import Listener
from spiffe_bridge.relay.observe import FeedStats, Observer, RelayStats
from spiffe_bridge.relay.server import RelayServicer
from spiffe_bridge.relay.sockets import Owner
from spiffe_bridge.relay.upstream import Outlet, Upstream
from spiffe_bridge.retry import Backoff

log = logging.getLogger("spiffe_bridge.relay")

#: Seconds the last good state is still served after the upstream stream was lost.
DEFAULT_HOLD = 10.0
#: Seconds a stream opened before upstream's first answer waits for it (then: Unavailable).
DEFAULT_STARTUP_WAIT = 1.0
#: Reconnect backoff towards the agent: a returning identity is seen within 5 s.
DEFAULT_BACKOFF = Backoff(initial=0.2, maximum=5.0)


@dataclass
class _Served:
    """One listener while the relay runs: its feeds, handlers, server and socket file."""

    listener: Listener
    outlet: Outlet
    forwarder: Forwarder
    servicer: RelayServicer
    server: grpc.aio.Server | None = None
    inode: int = 0


class AsyncRelay:
    """Re-serves one upstream Workload API on local Unix sockets (use on one event loop).

    ``upstream``: agent address (None: ``SPIFFE_ENDPOINT_SOCKET``); ``listen``:
    ``unix:///path`` to serve on, with ``allow_ids``/``allow_hints`` restricting
    the SVIDs its clients see (an SVID passes if either list allows it) and
    ``socket_mode``/``socket_owner`` for its file; or several ``Listener``
    objects, each with its own, all fed by the same upstream streams.
    ``hold``: seconds to keep serving the last state after losing upstream;
    ``startup_wait``: seconds a stream opened before upstream's first answer
    waits for it before ending Unavailable. Each upstream update is validated
    before any client sees it; ``forward_before_verify`` hands it on first and
    takes it back if it fails (faster, but a client may use an invalid update
    in between; see ``upstream.py``).
    """

    def __init__(
        self,
        upstream: str | None,
        listen: str | Sequence[Listener],
        *,
        allow_ids: Iterable[str] = (),
        allow_hints: Iterable[str] = (),
        socket_mode: int | None = None,
        socket_owner: Owner | str | None = None,
        hold: float = DEFAULT_HOLD,
        startup_wait: float = DEFAULT_STARTUP_WAIT,
        backoff: Backoff | None = None,
        forward_before_verify: bool = False,
        observer: Observer | None = None,
    ) -> None:
        self.upstream_endpoint = resolve(upstream)
        if isinstance(listen, str):
            listeners: tuple[Listener, ...] = (
                Listener.of(
                    listen,
                    allow_ids=allow_ids,
                    allow_hints=allow_hints,
                    socket_mode=socket_mode,
                    socket_owner=socket_owner,
                ),
            )
        else:
            listeners = tuple(listen)
            if list(allow_ids) or list(allow_hints) or socket_mode is not None or socket_owner is not None:
                raise ValueError("with Listener objects, give allow-lists, mode and owner per Listener")
        if not listeners:
            raise ValueError("the relay needs a socket to listen on")
        # Compared resolved: ``d/sub/../x.sock`` or a symlinked directory names the same socket.
        paths = [item.resolved for item in listeners]
        if len(set(paths)) != len(paths):
            raise ValueError(f"a socket is listed twice: {[item.path for item in listeners]}")
        upstream_path = self.upstream_endpoint.path
        if self.upstream_endpoint.kind == "unix" and os.path.realpath(upstream_path) in paths:
            raise ValueError(f"the relay cannot listen on its own upstream socket {upstream_path}")
        if hold < 0 or startup_wait < 0:
            raise ValueError("hold and startup_wait must be >= 0 seconds")
        self.listeners = listeners
        self._hold = hold
        self._startup_wait = startup_wait
        self._backoff = backoff or DEFAULT_BACKOFF
        self._forward_before_verify = forward_before_verify
        self._observer = observer
        self._served: list[_Served] = []
        self._upstream: Upstream | None = None
        self._running = False

    @property
    def socket_path(self) -> str:
        """Filesystem path of the (first) socket."""
        return self.listeners[0].path

    @property
    def address(self) -> str:
        """``unix:///path`` of the (first) socket, for SPIFFE_ENDPOINT_SOCKET or a proxy's config."""
        return self.listeners[0].address

    @property
    def filter(self) -> SvidFilter:
        """What the (first) socket's clients may see."""
        return self.listeners[0].filter

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return self._running

    async def start(self) -> None:
        """Open the upstream streams and serve every socket (which then exist with their mode/owner)."""
        if self._running:
            raise RuntimeError("relay is already running")
        for listener in self.listeners:
            try:
                self._served.append(await self._serve(listener))
            except BaseException:
                await self._close_served(None)
                raise
        self._running = True
        self._upstream = Upstream(
            self.upstream_endpoint.uri,
            [served.outlet for served in self._served],
            hold=self._hold,
            backoff=self._backoff,
            forward_before_verify=self._forward_before_verify,
            observer=self._observer,
        )
        self._upstream.start()
        for served in self._served:
            log.info(
                "relay serving %s from %s (%s)",
                served.listener.address,
                self.upstream_endpoint,
                served.listener.filter.describe(),
            )

    async def _serve(self, listener: Listener) -> _Served:
        path = listener.path
        socketfile.make_parents(path)
        socketfile.clear_stale(path, "relay")
        staged = socketfile.Staged(path)  # first: it may fail (EACCES) before anything needs closing
        feeds = {kind: Feed(kind) for kind in Kind}
        forwarder = Forwarder(self.upstream_endpoint, listener.filter)
        servicer = RelayServicer(feeds, forwarder, self._observer, self._startup_wait)
        served = _Served(listener, Outlet(listener.filter, feeds), forwarder, servicer)
        server = grpc.aio.server(handlers=[servicer.generic_handler()])
        owner = listener.owner or Owner()
        try:
            with staged.tight_umask():
                server.add_insecure_port("unix:" + staged.bind_path)
            served.inode = staged.publish(listener.mode, owner.uid, owner.gid)
            await server.start()
        except BaseException:
            await server.stop(None)
            await forwarder.close()
            staged.discard()
            if served.inode:
                socketfile.remove(path, served.inode)
            raise
        served.server = server
        return served

    async def stop(self, grace: float | None = 1.0) -> None:
        """End downstream streams (after ``grace`` seconds at most), close upstream, remove the sockets."""
        if not self._running:
            return
        self._running = False
        await self._close_served(grace)
        log.info("relay on %s stopped", ", ".join(item.address for item in self.listeners))

    async def _close_served(self, grace: float | None) -> None:
        served, self._served = self._served, []
        await asyncio.gather(*(item.server.stop(grace) for item in served if item.server is not None))
        if self._upstream is not None:
            await self._upstream.close()
            self._upstream = None
        for item in served:
            await item.forwarder.close()
            socketfile.remove(item.listener.path, item.inode)

    async def wait_for_termination(self) -> None:
        """Return when the servers stop."""
        await asyncio.gather(*(item.server.wait_for_termination() for item in self._served if item.server))

    async def wait_serving(self, kind: Kind = Kind.X509_SVID, listen: str | None = None) -> Snapshot:
        """Wait until a socket (default: the first) serves state of ``kind`` (e.g. the first SVIDs)."""
        return await self._feed(kind, listen).wait_until(lambda s: s.serving)

    async def wait_until(
        self, predicate: Callable[[Snapshot], bool], kind: Kind = Kind.X509_SVID, listen: str | None = None
    ) -> Snapshot:
        """Wait until what ``kind`` streams on a socket (default: the first) get satisfies ``predicate``."""
        return await self._feed(kind, listen).wait_until(predicate)

    def snapshot(self, kind: Kind = Kind.X509_SVID, listen: str | None = None) -> Snapshot:
        """What streams of ``kind`` on a socket (default: the first) get right now."""
        return self._feed(kind, listen).snapshot

    def stats(self, listen: str | None = None) -> RelayStats:
        """Counters and state of every stream kind of a socket (default: the first)."""
        return _stats(self._find(listen))

    def all_stats(self) -> tuple[RelayStats, ...]:
        """``stats()`` of every socket, in the order they were given."""
        return tuple(_stats(item) for item in self._served)

    def _find(self, listen: str | None) -> _Served:
        if not self._served:
            raise RuntimeError("relay is not started")
        if listen is None:
            return self._served[0]
        path = os.path.realpath(sockets.listen_path(listen))
        for item in self._served:
            if item.listener.resolved == path:
                return item
        raise KeyError(f"the relay does not serve {listen}")

    def _feed(self, kind: Kind, listen: str | None) -> Feed:
        return self._find(listen).outlet.feeds[kind]

    async def __aenter__(self) -> AsyncRelay:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _stats(served: _Served) -> RelayStats:
    feeds = {}
    for kind, feed in served.outlet.feeds.items():
        snap = feed.snapshot
        feeds[kind.value] = FeedStats(
            version=snap.version,
            serving=snap.serving,
            status=_status(snap),
            open_streams=feed.open_streams,
            messages_sent=feed.messages_sent,
            upstream_updates=feed.upstream_updates,
            invalid_updates=feed.invalid_updates,
            last_received_ns=snap.received_ns,
        )
    return RelayStats(served.listener.path, feeds, served.forwarder.calls, served.servicer.rejected)


def _status(snapshot: Snapshot) -> str:
    if not snapshot.serving:
        return snapshot.code.name
    return "holding" if snapshot.upstream_lost else "serving"
