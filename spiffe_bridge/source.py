"""Always-current sources on a background thread: ``X509Source`` and ``JWTSource``.

Create one, and it blocks (up to ``timeout``) for the first valid update, then
keeps the latest good state while the client reconnects underneath. Embed these
in your own agent or service; the sidecar, the relay and the TLS helpers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from spiffe_bridge import jwt, model
from spiffe_bridge.address import resolve
from spiffe_bridge.client.aio import AsyncWorkloadClient
from spiffe_bridge.client.sync import WorkloadClient
from spiffe_bridge.errors import WorkloadApiError
from spiffe_bridge.retry import Backoff
from spiffe_bridge.source_state import SourceState, SourceStatus, T, X509Reads
from spiffe_bridge.spiffeid import SpiffeId

S = TypeVar("S", bound="_ThreadSource[Any]")


class _ThreadSource(Generic[T]):
    """Runs one watch on a daemon thread and feeds a SourceState.

    The thread drives the asyncio client on a private event loop: grpcio's
    blocking stream API wakes its reader thread ten times a second even when
    nothing arrives, the asyncio API sleeps until the agent sends something, so
    an idle source costs several times less CPU. Callers still see a plain,
    thread-safe object; unary calls (JWT-SVIDs) use a blocking client.
    """

    _name = "source"

    def __init__(
        self,
        address: str | None,
        client: WorkloadClient | None,
        backoff: Backoff | None,
        timeout: float | None,
    ) -> None:
        # The blocking client is only needed for unary calls, so it is made on first use:
        # an idle grpcio channel has background pollers of its own.
        self._given_client = client
        self._sync_client: WorkloadClient | None = client
        self._endpoint = client.endpoint if client is not None else resolve(address).uri
        self._backoff = backoff or (client._core.backoff if client is not None else None)
        self._sync_lock = threading.Lock()
        self._state: SourceState[T] = SourceState(f"{self._name} ({self._endpoint})")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aclient: AsyncWorkloadClient | None = None
        self._loop_ready = threading.Event()
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name=f"spiffe-bridge-{self._name}", daemon=True)
        self._thread.start()
        if timeout is None or timeout > 0:
            try:
                self._state.wait(None, timeout)
            except BaseException:
                self.close()
                raise

    def _watch(self, client: AsyncWorkloadClient) -> AsyncIterator[T]:
        raise NotImplementedError

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # pragma: no cover - a bug; keep the state honest
            self._state.fail(exc)
        finally:
            self._loop_ready.set()

    async def _main(self) -> None:
        self._aclient = AsyncWorkloadClient(self._endpoint, backoff=self._backoff)
        self._loop = asyncio.get_running_loop()
        self._loop_ready.set()
        try:
            if not self._closing:
                async for item in self._watch(self._aclient):
                    self._state.offer(item)
        except WorkloadApiError as exc:
            if not self._closing:
                self._state.fail(exc)
        except asyncio.CancelledError:
            if not self._closing:
                raise
        finally:
            await self._aclient.close()

    @property
    def status(self) -> SourceStatus:
        """Where the stream stands (ready, reconnecting, identity lost, ...)."""
        return self._state.status

    @property
    def last_error(self) -> Exception | None:
        """The most recent rejected update or stream error."""
        return self._state.last_error

    @property
    def state(self) -> SourceState[T]:
        """Counters and status for health checks and metrics."""
        return self._state

    def subscribe(self, callback: Callable[[T], Any]) -> Callable[[], None]:
        """Call ``callback(update)`` for each changed update; returns an unsubscribe function."""
        return self._state.subscribe(callback)

    def wait_for(self, predicate: Callable[[T], bool] | None = None, timeout: float | None = 30.0) -> T:
        """Block until the held update satisfies ``predicate`` (NotReadyError on timeout)."""
        return self._state.wait(predicate, timeout)

    def _client(self) -> WorkloadClient:
        """The blocking client for unary calls, made on first use."""
        with self._sync_lock:
            if self._sync_client is None:
                self._sync_client = WorkloadClient(self._endpoint, backoff=self._backoff)
            return self._sync_client

    def _close_on_loop(self) -> None:
        if self._aclient is not None:  # keep a reference: the loop holds tasks only weakly
            self._close_task = asyncio.get_running_loop().create_task(self._aclient.close())

    def close(self) -> None:
        """Stop the stream, its thread and the subscriber threads."""
        self._closing = True
        self._loop_ready.wait(5)
        loop, aclient = self._loop, self._aclient
        if loop is not None and aclient is not None and loop.is_running():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(self._close_on_loop)
        if threading.current_thread() is not self._thread:
            self._thread.join(5)
        if self._given_client is None and self._sync_client is not None:
            self._sync_client.close()
        self._state.fail(None, SourceStatus.CLOSED)

    def __enter__(self: S) -> S:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class X509Source(X509Reads, _ThreadSource[model.X509Context]):
    """The current X.509 context of this workload, kept up to date in the background."""

    _name = "x509-source"

    def __init__(
        self,
        address: str | None = None,
        *,
        client: WorkloadClient | None = None,
        backoff: Backoff | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        super().__init__(address, client, backoff, timeout)

    def _watch(self, client: AsyncWorkloadClient) -> AsyncIterator[model.X509Context]:
        return client.watch_x509_contexts(on_error=self._state.on_error)


class JWTSource(_ThreadSource[jwt.JwtBundleSet]):
    """Current JWT bundles for local validation, and cached JWT-SVIDs refreshed at half-life."""

    _name = "jwt-source"

    def __init__(
        self,
        address: str | None = None,
        *,
        client: WorkloadClient | None = None,
        backoff: Backoff | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        self._svids: dict[tuple[Any, ...], tuple[jwt.JwtSvid, float]] = {}
        self._svid_lock = threading.Lock()
        super().__init__(address, client, backoff, timeout)

    def _watch(self, client: AsyncWorkloadClient) -> AsyncIterator[jwt.JwtBundleSet]:
        return client.watch_jwt_bundles(on_error=self._state.on_error)

    @property
    def bundles(self) -> jwt.JwtBundleSet:
        """The latest valid JWT bundle set."""
        return self._state.current()

    def validate(self, token: str, audience: str) -> jwt.JwtSvid:
        """Validate a JWT-SVID locally against the current bundles (JwtSvidError if invalid)."""
        return jwt.validate_jwt_svid(token, audience, self.bundles)

    def fetch_svid(
        self,
        audience: str,
        *extra_audiences: str,
        spiffe_id: str | SpiffeId | None = None,
        hint: str | None = None,
    ) -> jwt.JwtSvid:
        """A JWT-SVID for the audience(s), from cache until half its lifetime has passed."""
        key = (audience, extra_audiences, str(spiffe_id or ""), hint)
        now = time.time()
        with self._svid_lock:
            cached = self._svids.get(key)
            if cached is not None and now < cached[1]:
                return cached[0]
            svid = self._client().fetch_jwt_svid(audience, *extra_audiences, spiffe_id=spiffe_id, hint=hint)
            issued = svid.issued_at or now
            self._svids[key] = (svid, issued + (svid.expiry - issued) / 2)
            return svid
