"""Relay: an AsyncRelay on its own thread, for synchronous code, tests and demos.

The relay's event loop runs on one daemon thread; ``start``/``stop`` and the
waits below hand coroutines to it and block for the result, so callers never
touch grpc.aio objects from the wrong thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from spiffe_bridge.relay.aio import DEFAULT_HOLD, DEFAULT_STARTUP_WAIT, AsyncRelay
from spiffe_bridge.relay.feed import Kind, Snapshot
from spiffe_bridge.relay.filter import SvidFilter
from spiffe_bridge.relay.listener import Listener
from spiffe_bridge.relay.observe import Observer, RelayStats
from spiffe_bridge.relay.sockets import Owner
from spiffe_bridge.retry import Backoff

T = TypeVar("T")


class Relay:
    """Re-serves an upstream Workload API on local Unix sockets, from a background thread.

    Example::

        with Relay("unix:///run/spire/agent.sock", "unix:///run/relay/proxy.sock",
                   allow_ids=["spiffe://example.org/proxy"]) as relay:
            relay.wait_serving()

    Arguments are those of ``AsyncRelay``.
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
        self._relay = AsyncRelay(
            upstream,
            listen,
            allow_ids=allow_ids,
            allow_hints=allow_hints,
            socket_mode=socket_mode,
            socket_owner=socket_owner,
            hold=hold,
            startup_wait=startup_wait,
            backoff=backoff,
            forward_before_verify=forward_before_verify,
            observer=observer,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    # -- addresses ------------------------------------------------------------------------

    @property
    def socket_path(self) -> str:
        """Filesystem path of the relay's (first) socket."""
        return self._relay.socket_path

    @property
    def address(self) -> str:
        """``unix:///path`` of the relay's (first) socket."""
        return self._relay.address

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """Every socket the relay serves, with its filter."""
        return self._relay.listeners

    @property
    def upstream(self) -> str:
        """The upstream Workload API address."""
        return self._relay.upstream_endpoint.uri

    @property
    def filter(self) -> SvidFilter:
        """Which SVIDs clients of the (first) socket see."""
        return self._relay.filter

    @property
    def running(self) -> bool:
        """True between ``start`` and ``stop``."""
        return self._loop is not None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Relay:
        """Start the loop thread and serve; returns once the socket accepts connections."""
        with self._lifecycle:
            if self._loop is not None:
                raise RuntimeError("relay is already running")
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=_run_loop, args=(loop,), name="spiffe-bridge-relay", daemon=True)
            thread.start()
            try:
                asyncio.run_coroutine_threadsafe(self._relay.start(), loop).result(timeout)
            except BaseException:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout)
                raise
            self._loop, self._thread = loop, thread
        return self

    def stop(self, grace: float | None = 1.0, timeout: float = 10.0) -> None:
        """End downstream streams, close upstream, remove the socket and the loop thread."""
        with self._lifecycle:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            self._loop = self._thread = None
            try:
                asyncio.run_coroutine_threadsafe(self._relay.stop(grace), loop).result(timeout)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout)

    def __enter__(self) -> Relay:
        return self if self.running else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- state ----------------------------------------------------------------------------

    def wait_serving(
        self, kind: Kind = Kind.X509_SVID, timeout: float = 10.0, listen: str | None = None
    ) -> Snapshot:
        """Block until a socket (default: the first) serves state of ``kind``; TimeoutError otherwise."""
        return self._run(self._relay.wait_serving(kind, listen), timeout)

    def wait_until(
        self,
        predicate: Callable[[Snapshot], bool],
        kind: Kind = Kind.X509_SVID,
        timeout: float = 10.0,
        listen: str | None = None,
    ) -> Snapshot:
        """Block until what ``kind`` streams on a socket (default: the first) get satisfies ``predicate``."""
        return self._run(self._relay.wait_until(predicate, kind, listen), timeout)

    def snapshot(self, kind: Kind = Kind.X509_SVID, listen: str | None = None) -> Snapshot:
        """What new streams of ``kind`` get right now (payload, or the status they end with)."""
        return self._call(lambda: self._relay.snapshot(kind, listen))

    def stats(self, listen: str | None = None) -> RelayStats:
        """Counters and state of every stream kind."""
        return self._call(lambda: self._relay.stats(listen))

    def all_stats(self) -> tuple[RelayStats, ...]:
        """``stats()`` of every socket, in the order they were given."""
        return self._call(self._relay.all_stats)

    def _run(self, coro: Awaitable[T], timeout: float) -> T:
        loop = self._loop
        if loop is None:
            if isinstance(coro, Coroutine):
                coro.close()  # never to run: no "was never awaited" warning
            raise RuntimeError("relay is not running")

        async def wrapped() -> T:
            return await coro

        future = asyncio.run_coroutine_threadsafe(wrapped(), loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"relay on {self.address}: nothing within {timeout}s") from None

    def _call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        async def call() -> T:
            return fn()

        return self._run(call(), timeout)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        pending: set[asyncio.Task[Any]] = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
