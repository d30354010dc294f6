"""AsyncRelay: the upstream feeds, the forwarder and the downstream server, on one event loop.

Threading model: everything (upstream streams, downstream streams, forwarded
calls, hold timers) runs on a single asyncio loop with ``grpc.aio``. A
rotation reaches N downstream streams as one ``Event.set()`` followed by N
writes of the same bytes (the agent's) on that loop: no thread hand-offs,
no per-client locks, no per-client upstream calls. ``Relay`` (runner.py) runs
this on a background thread for synchronous code; the CLI runs it directly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from types import TracebackType

import grpc
import grpc.aio

from spiffe_bridge.address import resolve
from spiffe_bridge.relay import sockets
from spiffe_bridge.relay.feed import Feed, Kind, Snapshot
from spiffe_bridge.relay.filter import SvidFilter
from spiffe_bridge.relay.forward import Forwarder
from spiffe_bridge.relay.observe import FeedStats, Observer, RelayStats
from spiffe_bridge.relay.server import RelayServicer
from spiffe_bridge.relay.sockets import Owner
from spiffe_bridge.relay.upstream import Upstream
from spiffe_bridge.retry import Backoff

log = logging.getLogger("spiffe_bridge.relay")

#: Seconds the last good state is still served after the upstream stream was lost.
DEFAULT_HOLD = 10.0
#: Seconds a stream opened before upstream's first answer waits for it (then: Unavailable).
DEFAULT_STARTUP_WAIT = 1.0
#: Reconnect backoff towards the agent: a returning identity is seen within 5 s.
DEFAULT_BACKOFF = Backoff(initial=0.2, maximum=5.0)


class AsyncRelay:
    """Re-serves one upstream Workload API on a local Unix socket (use on one event loop).

    ``upstream``: agent address (None: ``SPIFFE_ENDPOINT_SOCKET``); ``listen``:
    ``unix:///path`` to serve on. ``allow_ids``/``allow_hints`` restrict the
    SVIDs downstream clients see (an SVID passes if either list allows it).
    ``hold``: seconds to keep serving the last state after losing upstream;
    ``startup_wait``: seconds a stream opened before upstream's first answer
    waits for it before ending Unavailable. ``verify_first``: validate each
    upstream update before any client sees it (default: right after handing it
    to the clients, taking it back if it fails; see ``upstream.py``).
    """

    def __init__(
        self,
        upstream: str | None,
        listen: str,
        *,
        allow_ids: Iterable[str] = (),
        allow_hints: Iterable[str] = (),
        socket_mode: int | None = None,
        socket_owner: Owner | str | None = None,
        hold: float = DEFAULT_HOLD,
        startup_wait: float = DEFAULT_STARTUP_WAIT,
        backoff: Backoff | None = None,
        verify_first: bool = False,
        observer: Observer | None = None,
    ) -> None:
        self.upstream_endpoint = resolve(upstream)
        self.socket_path = sockets.listen_path(listen)
        if self.upstream_endpoint.kind == "unix" and self.upstream_endpoint.path == self.socket_path:
            raise ValueError(f"the relay cannot listen on its own upstream socket {self.socket_path}")
        self.filter = SvidFilter.of(allow_ids, allow_hints)
        self._mode = socket_mode
        self._owner = Owner.parse(socket_owner) if isinstance(socket_owner, str) else socket_owner
        if hold < 0 or startup_wait < 0:
            raise ValueError("hold and startup_wait must be >= 0 seconds")
        self._hold = hold
        self._startup_wait = startup_wait
        self._backoff = backoff or DEFAULT_BACKOFF
        self._verify_first = verify_first
        self._observer = observer
        self._feeds: dict[Kind, Feed] = {}
        self._upstream: Upstream | None = None
        self._forwarder: Forwarder | None = None
        self._servicer: RelayServicer | None = None
        self._server: grpc.aio.Server | None = None
        self._inode = 0

    @property
    def address(self) -> str:
        """``unix:///path`` of the relay's socket, for SPIFFE_ENDPOINT_SOCKET or a proxy's config."""
        return "unix://" + self.socket_path

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return self._server is not None

    async def start(self) -> None:
        """Open the upstream streams and serve the socket (which then exists with its mode/owner)."""
        if self._server is not None:
            raise RuntimeError("relay is already running")
        path = self.socket_path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sockets.clear_stale(path)
        self._feeds = {kind: Feed(kind) for kind in Kind}
        self._forwarder = Forwarder(self.upstream_endpoint, self.filter)
        self._servicer = RelayServicer(self._feeds, self._forwarder, self._observer, self._startup_wait)
        server = grpc.aio.server(handlers=[self._servicer.generic_handler()])
        bound = sockets.temporary_path(path)
        try:
            server.add_insecure_port("unix:" + bound)
            self._inode = sockets.publish(bound, path, self._mode, self._owner)
            await server.start()
        except BaseException:
            await server.stop(None)
            await self._forwarder.close()
            sockets.discard(bound)
            if self._inode:
                sockets.remove(path, self._inode)
            raise
        self._server = server
        self._upstream = Upstream(
            self.upstream_endpoint.uri,
            self._feeds,
            self.filter,
            hold=self._hold,
            backoff=self._backoff,
            verify_first=self._verify_first,
            observer=self._observer,
        )
        self._upstream.start()
        log.info(
            "relay serving %s from %s (%s)", self.address, self.upstream_endpoint, self.filter.describe()
        )

    async def stop(self, grace: float | None = 1.0) -> None:
        """End downstream streams (after ``grace`` seconds at most), close upstream, remove the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        await server.stop(grace)
        if self._upstream is not None:
            await self._upstream.close()
        if self._forwarder is not None:
            await self._forwarder.close()
        sockets.remove(self.socket_path, self._inode)
        log.info("relay on %s stopped", self.address)

    async def wait_for_termination(self) -> None:
        """Return when the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def wait_serving(self, kind: Kind = Kind.X509_SVID) -> Snapshot:
        """Wait until the relay serves state of ``kind`` (e.g. the first SVIDs arrived)."""
        return await self._feed(kind).wait_until(lambda s: s.serving)

    async def wait_until(
        self, predicate: Callable[[Snapshot], bool], kind: Kind = Kind.X509_SVID
    ) -> Snapshot:
        """Wait until what streams of ``kind`` get satisfies ``predicate``."""
        return await self._feed(kind).wait_until(predicate)

    def snapshot(self, kind: Kind = Kind.X509_SVID) -> Snapshot:
        """What streams of ``kind`` get right now."""
        return self._feed(kind).snapshot

    def stats(self) -> RelayStats:
        """Counters and state of every stream kind."""
        feeds = {}
        for kind, feed in self._feeds.items():
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
        forwarded = self._forwarder.calls if self._forwarder else 0
        rejected = self._servicer.rejected if self._servicer else 0
        return RelayStats(feeds, forwarded, rejected)

    def _feed(self, kind: Kind) -> Feed:
        if not self._feeds:
            raise RuntimeError("relay is not started")
        return self._feeds[kind]

    async def __aenter__(self) -> AsyncRelay:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _status(snapshot: Snapshot) -> str:
    if not snapshot.serving:
        return snapshot.code.name
    return "holding" if snapshot.upstream_lost else "serving"
