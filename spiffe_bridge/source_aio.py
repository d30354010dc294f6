"""``AsyncX509Source``: the always-current X.509 context as an asyncio task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from spiffe_bridge import model
from spiffe_bridge.client.aio import AsyncWorkloadClient
from spiffe_bridge.errors import WorkloadApiError
from spiffe_bridge.retry import Backoff
from spiffe_bridge.source_state import SourceState, SourceStatus, X509Reads


class _AsyncSubscriber:
    """Runs one callback in its own task, newest update only: a slow one delays only itself."""

    def __init__(self, callback: Callable[[model.X509Context], Any]) -> None:
        self.callback = callback
        self._pending: model.X509Context | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def push(self, ctx: model.X509Context) -> None:
        self._pending = ctx
        self._wake.set()
        if self._task is None:  # created here, inside the running loop
            self._task = asyncio.create_task(self._run(), name="spiffe-bridge-async-subscriber")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            ctx, self._pending = self._pending, None
            if ctx is not None:
                await AsyncX509Source._call(self.callback, ctx)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class AsyncX509Source(X509Reads):
    """Use ``async with AsyncX509Source(addr) as source:``; it waits for the first update.

    Reads (``context``, ``svid()``) are plain attribute access and never block.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        client: AsyncWorkloadClient | None = None,
        backoff: Backoff | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        self._owns_client = client is None
        self._client = client or AsyncWorkloadClient(address, backoff=backoff)
        self._timeout = timeout
        self._state: SourceState[model.X509Context] = SourceState(
            f"async-x509-source ({self._client.endpoint})"
        )
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._subscribers: list[_AsyncSubscriber] = []

    async def start(self) -> AsyncX509Source:
        """Start watching and wait (up to ``timeout``) for the first valid update."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="spiffe-bridge-async-x509-source")
        try:
            await asyncio.wait_for(self.wait_for(None), self._timeout)
        except TimeoutError:
            await self.close()
            from spiffe_bridge.errors import NotReadyError

            raise NotReadyError(
                f"no X.509 context within {self._timeout}s: {self._state.last_error}"
            ) from None
        return self

    async def _run(self) -> None:
        try:
            async for ctx in self._client.watch_x509_contexts(on_error=self._on_error):
                if self._state.offer(ctx):
                    for subscriber in list(self._subscribers):
                        subscriber.push(ctx)
                self._wake()
        except WorkloadApiError as exc:
            self._state.fail(exc)
            self._wake()

    def _on_error(self, exc: Exception) -> None:
        self._state.on_error(exc)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @staticmethod
    async def _call(callback: Callable[[model.X509Context], Any], ctx: model.X509Context) -> None:
        try:
            result = callback(ctx)
            if isinstance(result, Awaitable):
                await result
        except Exception:
            import logging

            logging.getLogger("spiffe_bridge.source").exception("subscriber raised; the stream goes on")

    @property
    def state(self) -> SourceState[model.X509Context]:
        """Counters and status."""
        return self._state

    def subscribe(self, callback: Callable[[model.X509Context], Any]) -> Callable[[], None]:
        """Call ``callback(ctx)`` (sync or async) on every changed update, in a task of its own.

        An async callback that takes long (or raises) delays only itself, and then gets
        only the newest update; a sync callback runs on the event loop, so keep it short.
        """
        subscriber = _AsyncSubscriber(callback)
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
                if subscriber._task is not None:
                    subscriber._task.cancel()

        return unsubscribe

    async def wait_for(
        self, predicate: Callable[[model.X509Context], bool] | None = None
    ) -> model.X509Context:
        """Wait until the held context satisfies ``predicate`` (wrap in asyncio.timeout)."""
        while True:
            item = self._state.item
            if item is not None and (predicate is None or predicate(item)):
                return item
            if self._state.status in (SourceStatus.FAILED, SourceStatus.CLOSED):
                from spiffe_bridge.errors import NotReadyError

                raise NotReadyError(f"source stopped: {self._state.last_error}")
            await self._changed.wait()

    async def close(self) -> None:
        """Stop the stream."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        subscribers, self._subscribers = self._subscribers, []
        for subscriber in subscribers:
            await subscriber.stop()
        if self._owns_client:
            await self._client.close()
        self._state.fail(None, SourceStatus.CLOSED)
        self._wake()

    async def __aenter__(self) -> AsyncX509Source:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
