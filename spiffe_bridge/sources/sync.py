"""The sync sources: thin facades over the asyncio sources, run on a private event-loop thread.

``X509Source``, ``X509BundleSource`` and ``JwtSource`` block (up to ``timeout``)
for the first valid update, then keep the latest good one while the client
reconnects underneath, as ``Relay`` wraps ``AsyncRelay``. The stream runs on
grpc.aio, which sleeps until the agent sends something (grpcio's blocking
iterator wakes ten times a second). Given ``client=`` (a ``WorkloadClient``),
a source streams over that client on a thread of its own and neither owns nor
closes it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

from spiffe_bridge._loopthread import LoopThread
from spiffe_bridge.client.streams import StreamSpec
from spiffe_bridge.client.sync import WorkloadClient
from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.retry import Backoff
from spiffe_bridge.sources.aio import (
    AsyncJwtSource,
    AsyncX509BundleSource,
    AsyncX509Source,
    StreamClient,
    _AsyncSource,
    svid_key,
)
from spiffe_bridge.sources.reads import JwtReads, X509BundleReads, X509Reads
from spiffe_bridge.sources.state import SourceState, T
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.x509bundle import X509BundleSet
from spiffe_bridge.x509context import X509Context

U = TypeVar("U")
A = TypeVar("A", bound=_AsyncSource[Any])
S = TypeVar("S", bound="_SyncSource[Any, Any]")


class _LentClient:
    """A caller's blocking ``WorkloadClient`` as a ``StreamClient``: its stream is read on a thread."""

    def __init__(self, client: WorkloadClient) -> None:
        self._client = client

    @property
    def endpoint(self) -> str:
        return self._client.endpoint

    async def watch(
        self, spec: StreamSpec[U], on_error: Callable[[Exception], None] | None = None
    ) -> AsyncIterator[U]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()

        def hand_over(*args: Any) -> None:
            try:
                loop.call_soon_threadsafe(*args)
            except RuntimeError:  # the loop closed: the source is gone, nobody is waiting
                handle.cancel()

        def report(exc: Exception) -> None:
            if on_error is not None:
                hand_over(on_error, exc)

        handle = self._client.watch(spec, report)

        def pump() -> None:
            outcome: Exception | None = None
            try:
                for item in handle:
                    hand_over(queue.put_nowait, (True, item))
            except Exception as exc:
                outcome = exc
            hand_over(queue.put_nowait, (False, outcome))

        threading.Thread(target=pump, name="spiffe-bridge-lent-client", daemon=True).start()
        try:
            while True:
                is_item, value = await queue.get()
                if is_item:
                    yield value
                elif value is None:
                    return
                else:
                    raise value
        finally:
            handle.cancel()

    async def fetch_jwt_svid(
        self,
        audience: str,
        *extra_audiences: str,
        spiffe_id: str | SpiffeId | None = None,
        hint: str | None = None,
        timeout: float | None = None,
    ) -> JwtSvid:
        return await asyncio.to_thread(
            self._client.fetch_jwt_svid,
            audience,
            *extra_audiences,
            spiffe_id=spiffe_id,
            hint=hint,
            timeout=timeout,
        )

    async def close(self) -> None:
        """Nothing: the caller owns the client."""


class _SyncSource(Generic[T, A]):
    """An asyncio source of kind ``_async`` on a private loop thread; reads go straight to its state."""

    _async: ClassVar[type[_AsyncSource[Any]]]

    def __init__(
        self,
        address: str | None = None,
        *,
        client: WorkloadClient | None = None,
        backoff: Backoff | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        """Start the asyncio twin on a private loop thread; wait up to ``timeout`` for its first update."""
        self._lifecycle = threading.Lock()
        self._closed = False
        self._loop = LoopThread(f"spiffe-bridge-{self._async._name.removeprefix('async-')}")
        lent: StreamClient | None = _LentClient(client) if client is not None else None
        try:
            self._source: A = self._loop.run(self._create(address, lent, backoff))
        except BaseException:  # e.g. no address: do not leave the loop thread behind
            self._loop.stop()
            raise
        self._state: SourceState[T] = self._source._state
        if timeout is None or timeout > 0:
            try:
                self._state.wait(None, timeout)
            except BaseException:
                self.close()
                raise

    async def _create(self, address: str | None, client: StreamClient | None, backoff: Backoff | None) -> A:
        source: A = self._async(address, client=client, backoff=backoff, timeout=0)  # type: ignore[assignment]
        source.begin()
        return source

    def subscribe(self, callback: Callable[[T], Any]) -> Callable[[], None]:
        """Call ``callback(update)`` on its own thread for each changed update (and now, if one is held).

        A callback that blocks delays only itself and then gets only the newest update.
        """
        self._state.check_open()
        return self._state.subscribe(callback)

    def wait_for(self, predicate: Callable[[T], bool] | None = None, timeout: float | None = 30.0) -> T:
        """Block until the held update satisfies ``predicate`` (NotReadyError on timeout)."""
        return self._state.wait(predicate, timeout)

    def _run(self, coro: Coroutine[Any, Any, U], timeout: float | None = None) -> U:
        self._state.check_open()
        return self._loop.run(coro, timeout)

    def close(self) -> None:
        """Stop the stream, the loop thread and the subscriber threads; idempotent."""
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True
        try:
            self._loop.run(self._source.close(), timeout=10)
        finally:
            self._loop.stop()

    def __enter__(self: S) -> S:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class X509Source(X509Reads, _SyncSource[X509Context, AsyncX509Source]):
    """The current X.509 context of this workload, kept up to date in the background."""

    _async = AsyncX509Source


class X509BundleSource(X509BundleReads, _SyncSource[X509BundleSet, AsyncX509BundleSource]):
    """The current X.509 bundles (FetchX509Bundles), kept up to date in the background."""

    _async = AsyncX509BundleSource


class JwtSource(JwtReads, _SyncSource[JwtBundleSet, AsyncJwtSource]):
    """Current JWT bundles for local validation, and cached JWT-SVIDs refreshed at half-life."""

    _async = AsyncJwtSource

    def fetch_svid(
        self,
        audience: str,
        *extra_audiences: str,
        spiffe_id: str | SpiffeId | None = None,
        hint: str | None = None,
    ) -> JwtSvid:
        """A JWT-SVID for the audience(s), from cache until half its lifetime has passed."""
        self._state.check_open()
        cached = self._source.svids.get(svid_key(audience, extra_audiences, spiffe_id, hint))
        if cached is not None:
            return cached
        return self._run(self._source.fetch_svid(audience, *extra_audiences, spiffe_id=spiffe_id, hint=hint))


#: The earlier name (go-spiffe's spelling), kept as an alias: the same class (docs/library.md, "Names").
JWTSource = JwtSource
