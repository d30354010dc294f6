"""The asyncio sources, which are the implementation: X.509 context, X.509 bundles, JWT bundles.

Use ``async with AsyncX509Source(addr) as source:``; it waits for the first
update. Reads (``context``, ``bundles``, ``svid()``) are plain attribute access
and never block. Given ``client=``, a source streams over that client and
neither owns nor closes it; otherwise it opens and closes its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from spiffe_bridge.client.aio import AsyncWorkloadClient
from spiffe_bridge.client.streams import JWT_BUNDLES, X509_BUNDLES, X509_CONTEXTS, StreamSpec
from spiffe_bridge.errors import NotReadyError
from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.retry import Backoff
from spiffe_bridge.sources.reads import JwtReads, X509BundleReads, X509Reads
from spiffe_bridge.sources.state import SourceState, T
from spiffe_bridge.sources.watcher import Watcher
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.x509bundle import X509BundleSet
from spiffe_bridge.x509context import X509Context

U = TypeVar("U")
S = TypeVar("S", bound="_AsyncSource[Any]")


class StreamClient(Protocol):
    """What a source needs from a client: ``AsyncWorkloadClient`` fits (the sync facades adapt theirs)."""

    @property
    def endpoint(self) -> str: ...

    def watch(
        self, spec: StreamSpec[U], on_error: Callable[[Exception], None] | None = None
    ) -> AsyncIterator[U]: ...

    async def fetch_jwt_svid(
        self,
        audience: str,
        *extra_audiences: str,
        spiffe_id: str | SpiffeId | None = None,
        hint: str | None = None,
        timeout: float | None = None,
    ) -> JwtSvid: ...

    async def close(self) -> None: ...


class _AsyncSource(Generic[T]):
    """One stream kind: a watcher over a client, with start/close/subscribe/wait_for."""

    _spec: ClassVar[StreamSpec[Any]]
    _name: ClassVar[str]

    def __init__(
        self,
        address: str | None = None,
        *,
        client: StreamClient | None = None,
        backoff: Backoff | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        self._owns_client = client is None
        self._client: StreamClient = client or AsyncWorkloadClient(address, backoff=backoff)
        self._timeout = timeout
        self._state: SourceState[T] = SourceState(f"{self._name} ({self._client.endpoint})")
        spec: StreamSpec[T] = self._spec
        self._watcher: Watcher[T] = Watcher(self._state, lambda on_error: self._client.watch(spec, on_error))

    def begin(self) -> None:
        """Start watching without waiting (inside the running loop); ``start`` also waits."""
        self._watcher.begin(f"spiffe-bridge-{self._name}")

    async def start(self: S) -> S:
        """Start watching and wait (up to ``timeout``; 0: not at all) for the first valid update."""
        self.begin()
        if self._timeout == 0:
            return self
        try:
            await asyncio.wait_for(self._watcher.wait_for(None), self._timeout)
        except TimeoutError:
            await self.close()
            raise NotReadyError(
                f"{self._state.name}: nothing valid within {self._timeout}s: {self._state.last_error}"
            ) from None
        except BaseException:
            await self.close()
            raise
        return self

    def subscribe(self, callback: Callable[[T], Any]) -> Callable[[], None]:
        """Call ``callback(update)`` (sync or async) on every changed update, in a task of its own.

        An async callback that takes long (or raises) delays only itself, and then gets
        only the newest update; a sync callback runs on the event loop, so keep it short.
        """
        return self._watcher.subscribe(callback)

    async def wait_for(self, predicate: Callable[[T], bool] | None = None) -> T:
        """Wait until the held update satisfies ``predicate`` (wrap in ``asyncio.timeout``)."""
        return await self._watcher.wait_for(predicate)

    async def close(self) -> None:
        """Stop the stream (and the client, when the source opened it); idempotent."""
        await self._watcher.close()
        if self._owns_client:
            await self._client.close()

    async def __aenter__(self: S) -> S:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class AsyncX509Source(X509Reads, _AsyncSource[X509Context]):
    """This workload's X.509 context (SVIDs, bundles, CRLs) from FetchX509SVID, always current."""

    _spec = X509_CONTEXTS
    _name = "async-x509-source"


class AsyncX509BundleSource(X509BundleReads, _AsyncSource[X509BundleSet]):
    """X.509 bundles (own and federated trust domains) from FetchX509Bundles: trust without an SVID."""

    _spec = X509_BUNDLES
    _name = "async-x509-bundle-source"


class SvidCache:
    """JWT-SVIDs by request, each served until half its lifetime has passed."""

    def __init__(self) -> None:
        self._svids: dict[tuple[Any, ...], tuple[JwtSvid, float]] = {}

    def get(self, key: tuple[Any, ...]) -> JwtSvid | None:
        """The cached SVID for ``key`` if it is not yet due for a refresh."""
        cached = self._svids.get(key)
        return cached[0] if cached is not None and time.time() < cached[1] else None

    def put(self, key: tuple[Any, ...], svid: JwtSvid) -> None:
        """Remember ``svid`` until half its lifetime."""
        issued = svid.issued_at or time.time()
        self._svids[key] = (svid, issued + (svid.expiry - issued) / 2)


def svid_key(
    audience: str, extra_audiences: tuple[str, ...], spiffe_id: str | SpiffeId | None, hint: str | None
) -> tuple[Any, ...]:
    """The cache key of one JWT-SVID request."""
    return (audience, extra_audiences, str(spiffe_id or ""), hint)


class AsyncJwtSource(JwtReads, _AsyncSource[JwtBundleSet]):
    """JWT bundles from FetchJWTBundles for local validation, and cached JWT-SVIDs refreshed at half-life."""

    _spec = JWT_BUNDLES
    _name = "async-jwt-source"

    def __init__(
        self,
        address: str | None = None,
        *,
        client: StreamClient | None = None,
        backoff: Backoff | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        super().__init__(address, client=client, backoff=backoff, timeout=timeout)
        self.svids = SvidCache()

    async def fetch_svid(
        self,
        audience: str,
        *extra_audiences: str,
        spiffe_id: str | SpiffeId | None = None,
        hint: str | None = None,
    ) -> JwtSvid:
        """A JWT-SVID for the audience(s), from cache until half its lifetime has passed."""
        self._state.check_open()
        key = svid_key(audience, extra_audiences, spiffe_id, hint)
        svid = self.svids.get(key)
        if svid is None:
            svid = await self._client.fetch_jwt_svid(
                audience, *extra_audiences, spiffe_id=spiffe_id, hint=hint
            )
            self._state.check_open()
            self.svids.put(key, svid)
        return svid


#: The earlier name (go-spiffe's spelling), kept as an alias: the same class (docs/library.md, "Names").
AsyncJWTSource = AsyncJwtSource
