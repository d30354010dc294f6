"""One watcher per source: a supervised stream feeding a SourceState, with asyncio subscribers.

The reconnect supervisor lives in the client (``watch``: tenacity decides when to
reconnect) and decoding in the model; the watcher only takes what comes out,
keeps the last good update, wakes waiters and hands changes to subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic

from spiffe_bridge.errors import NotReadyError, WorkloadApiError
from spiffe_bridge.sources.state import SourceState, SourceStatus, T

log = logging.getLogger("spiffe_bridge.source")

#: Opens the supervised stream, reporting skipped updates and reconnect reasons to the callback.
Stream = Callable[[Callable[[Exception], None]], AsyncIterator[T]]


class _AsyncSubscriber(Generic[T]):
    """Runs one callback in its own task, newest update only: a slow one delays only itself."""

    def __init__(self, callback: Callable[[T], Any]) -> None:
        self.callback = callback
        self._pending: T | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def push(self, item: T) -> None:
        self._pending = item
        self._wake.set()
        if self._task is None:  # created here, inside the running loop
            self._task = asyncio.create_task(self._run(), name="spiffe-bridge-async-subscriber")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            item, self._pending = self._pending, None
            if item is None:
                continue
            try:
                result = self.callback(item)
                if isinstance(result, Awaitable):
                    await result
            except Exception:
                log.exception("subscriber %r raised; the stream goes on", self.callback)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        self.cancel()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Watcher(Generic[T]):
    """Feeds ``state`` from ``stream`` in a task of the running loop."""

    def __init__(self, state: SourceState[T], stream: Stream[T]) -> None:
        self.state = state
        self._stream = stream
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._subscribers: list[_AsyncSubscriber[T]] = []

    def begin(self, name: str) -> None:
        """Start the task (once); the caller is inside the loop."""
        self.state.check_open()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=name)

    async def _run(self) -> None:
        try:
            async for item in self._stream(self._on_error):
                if self.state.offer(item):
                    for subscriber in list(self._subscribers):
                        subscriber.push(item)
                self._wake()
        except WorkloadApiError as exc:
            self.state.fail(exc)
            self._wake()
        except Exception as exc:  # e.g. the caller closed the client it lent us
            log.error("%s: the stream stopped: %s", self.state.name, exc)
            self.state.fail(exc)
            self._wake()

    def _on_error(self, exc: Exception) -> None:
        self.state.on_error(exc)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def subscribe(self, callback: Callable[[T], Any]) -> Callable[[], None]:
        """Call ``callback(update)`` (sync or async) on every changed update, in a task of its own."""
        self.state.check_open()
        subscriber: _AsyncSubscriber[T] = _AsyncSubscriber(callback)
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
                subscriber.cancel()

        return unsubscribe

    async def wait_for(self, predicate: Callable[[T], bool] | None) -> T:
        """Wait until the held update satisfies ``predicate``; SourceClosedError once closed."""
        while True:
            self.state.check_open()
            item = self.state.item
            if item is not None and (predicate is None or predicate(item)):
                return item
            if self.state.status is SourceStatus.FAILED:
                raise NotReadyError(f"{self.state.name}: stopped: {self.state.last_error}")
            await self._changed.wait()

    async def close(self) -> None:
        """Stop the stream and the subscribers; every getter raises SourceClosedError from now on."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        subscribers, self._subscribers = self._subscribers, []
        for subscriber in subscribers:
            await subscriber.stop()
        self.state.fail(None, SourceStatus.CLOSED)
        self._wake()
