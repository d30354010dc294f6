"""State shared by every source: the latest good update, dedupe, status and subscribers.

A source keeps the last valid update until closed (bad updates never replace it),
announces an update only when its content digest changed (an agent restart
re-delivers identical material), and isolates subscribers from each other: a
callback that raises is logged, one that blocks only delays itself.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from spiffe_bridge.errors import NoIdentityError, NotReadyError, SourceClosedError, ValidationError

log = logging.getLogger("spiffe_bridge.source")


class _Digestible(Protocol):
    @property
    def digest(self) -> bytes: ...


T = TypeVar("T", bound=_Digestible)


class SourceStatus(enum.Enum):
    """Where a source's stream stands."""

    STARTING = "starting"  # no update yet
    READY = "ready"  # connected, holding a current update
    RECONNECTING = "reconnecting"  # stream lost; last update kept
    IDENTITY_LOST = "identity_lost"  # agent said PermissionDenied on a live stream
    FAILED = "failed"  # non-retryable error; stream stopped
    CLOSED = "closed"


class _Subscriber(Generic[T]):
    """Delivers the newest update to one callback on its own thread, coalescing backlogs."""

    def __init__(self, callback: Callable[[T], Any]) -> None:
        self.callback = callback
        self._pending: T | None = None
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="spiffe-bridge-subscriber", daemon=True)
        self._thread.start()

    def push(self, item: T) -> None:
        with self._cond:
            self._pending = item
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                item, self._pending = self._pending, None
            try:
                self.callback(item)  # type: ignore[arg-type]
            except Exception:
                log.exception("subscriber %r raised; the stream goes on", self.callback)


class SourceState(Generic[T]):
    """Thread-safe holder of the latest good update plus status, errors and counters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._item: T | None = None
        self.status = SourceStatus.STARTING
        self.last_error: Exception | None = None
        self.updates = 0
        self.rejected = 0
        self.reconnects = 0
        self.last_update_at: float | None = None
        self._subscribers: list[_Subscriber[T]] = []
        self._status_listeners: list[Callable[[SourceStatus, Exception | None], None]] = []

    @property
    def item(self) -> T | None:
        """The latest good update, or None before the first."""
        return self._item

    def offer(self, item: T) -> bool:
        """Take a validated update; notify subscribers only if its content changed."""
        with self._cond:
            if self.status is SourceStatus.CLOSED:  # closed is final: a late update changes nothing
                return False
            changed = self._item is None or self._item.digest != item.digest
            if changed:
                self._item = item
                self.updates += 1
                self.last_update_at = time.time()
            subscribers = list(self._subscribers) if changed else []
            self._set_status(SourceStatus.READY, None)
            self._cond.notify_all()
        for sub in subscribers:
            sub.push(item)
        return changed

    def on_error(self, exc: Exception) -> None:
        """Record a rejected update or a reconnect reason (called from the watch loop)."""
        with self._cond:
            self.last_error = exc
            if isinstance(exc, ValidationError):
                self.rejected += 1
                return
            self.reconnects += 1
            status = (
                SourceStatus.IDENTITY_LOST if isinstance(exc, NoIdentityError) else SourceStatus.RECONNECTING
            )
            self._set_status(status, exc)
            self._cond.notify_all()

    def fail(self, exc: Exception | None, status: SourceStatus = SourceStatus.FAILED) -> None:
        """The stream stopped for good (non-retryable error, or closed)."""
        with self._cond:
            if exc is not None:
                self.last_error = exc
            self._set_status(status, exc)
            self._cond.notify_all()
            stopped: list[_Subscriber[T]] = []
            if status is SourceStatus.CLOSED:
                stopped, self._subscribers = self._subscribers, []
        for sub in stopped:
            sub.stop()

    def _set_status(self, status: SourceStatus, exc: Exception | None) -> None:
        if status is self.status or self.status is SourceStatus.CLOSED:
            return
        self.status = status
        for listener in list(self._status_listeners):
            try:
                listener(status, exc)
            except Exception:
                log.exception("status listener raised; ignored")

    def subscribe(self, callback: Callable[[T], Any]) -> Callable[[], None]:
        """Call ``callback(update)`` for each changed update (and now, if one is held)."""
        sub: _Subscriber[T] = _Subscriber(callback)
        with self._cond:
            self._subscribers.append(sub)
            current = self._item
        if current is not None:
            sub.push(current)

        def unsubscribe() -> None:
            with self._cond:
                if sub in self._subscribers:
                    self._subscribers.remove(sub)
            sub.stop()

        return unsubscribe

    def add_status_listener(self, listener: Callable[[SourceStatus, Exception | None], None]) -> None:
        """Call ``listener(status, error)`` on every status change (from the watch thread)."""
        with self._cond:
            self._status_listeners.append(listener)

    def current(self) -> T:
        """The latest update; NotReadyError before the first, NoIdentityError after an identity loss.

        A closed source raises SourceClosedError: it never serves its last update again.
        """
        with self._cond:
            if self.status is SourceStatus.CLOSED:
                raise SourceClosedError(f"{self.name}: the source is closed")
            if self.status is SourceStatus.IDENTITY_LOST:
                raise NoIdentityError(f"{self.name}: the agent withdrew this workload's identity")
            if self._item is None:
                raise NotReadyError(f"{self.name}: no update received yet ({self._describe()})")
            return self._item

    def wait(self, predicate: Callable[[T], bool] | None, timeout: float | None) -> T:
        """Block until an update satisfying ``predicate`` (default: any) is held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                item = self._item
                self.check_open()
                if item is not None and (predicate is None or predicate(item)):
                    return item
                if self.status is SourceStatus.FAILED:
                    raise NotReadyError(f"{self.name}: stopped ({self._describe()})")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise NotReadyError(f"{self.name}: no matching update in {timeout}s ({self._describe()})")
                self._cond.wait(remaining)

    def check_open(self) -> None:
        """Raise SourceClosedError once the source was closed."""
        if self.status is SourceStatus.CLOSED:
            raise SourceClosedError(f"{self.name}: the source is closed")

    def _describe(self) -> str:
        err = f"; last error: {self.last_error}" if self.last_error else ""
        return f"status {self.status.value}{err}"
