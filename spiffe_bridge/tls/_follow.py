"""Keep one derived object (an SSLContext, a gRPC channel) in step with an X.509 source.

``Follower`` builds its object from the source's current context at once,
then rebuilds it whenever the source announces a changed context (new SVID,
new or removed bundles). A failed rebuild keeps the previous object and
records the error: a TLS endpoint that keeps its last good identity is better
than one that stops working. Works with ``X509Source`` (callbacks on a
subscriber thread) and ``AsyncX509Source`` (callbacks in its task).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from spiffe_bridge.errors import NotReadyError
from spiffe_bridge.sources.protocols import X509SourceLike
from spiffe_bridge.x509context import X509Context

log = logging.getLogger("spiffe_bridge.tls")

A = TypeVar("A")


class Follower(Generic[A]):
    """Holds ``build(context)`` for the source's latest context; thread-safe."""

    def __init__(
        self,
        source: X509SourceLike,
        build: Callable[[X509Context], A],
        name: str,
        on_replace: Callable[[A], None] | None = None,
    ) -> None:
        self._build = build
        self._name = name
        self._on_replace = on_replace
        self._cond = threading.Condition()
        self._build_lock = threading.Lock()
        self._closed = False
        self.last_error: Exception | None = None
        first = source.context
        self._current: tuple[X509Context, A] = (first, build(first))
        self.generation = 1
        self._unsubscribe = source.subscribe(self._on_update)

    @property
    def current(self) -> tuple[X509Context, A]:
        """The context and the object built from it (one consistent pair)."""
        return self._current

    def _on_update(self, context: X509Context) -> None:
        if self._closed or context.digest == self._current[0].digest:
            return
        self._rebuild(context)

    def refresh(self) -> None:
        """Rebuild from the current context (after a setting that the built object embeds changed)."""
        self._rebuild(self._current[0])

    def _rebuild(self, context: X509Context) -> None:
        with self._build_lock:
            if self._closed:
                return
            try:
                built = self._build(context)
            except Exception as exc:
                self.last_error = exc
                log.warning("%s: keeping the previous TLS material; rebuild failed: %s", self._name, exc)
                return
            with self._cond:
                old = self._current[1]
                self._current = (context, built)
                self.generation += 1
                self._cond.notify_all()
        if self._on_replace is not None:
            self._on_replace(old)

    def wait_for(self, predicate: Callable[[X509Context], bool], timeout: float | None = 30.0) -> X509Context:
        """Block until the object in use was built from a context satisfying ``predicate``.

        For threads only; with an ``AsyncX509Source`` the rebuild has already
        happened when ``await source.wait_for(...)`` returns.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                context = self._current[0]
                if predicate(context):
                    return context
                remaining = None if deadline is None else deadline - time.monotonic()
                if self._closed or (remaining is not None and remaining <= 0):
                    raise NotReadyError(f"{self._name}: no matching update in {timeout}s")
                self._cond.wait(remaining)

    @property
    def closed(self) -> bool:
        """True after ``close``."""
        return self._closed

    def close(self) -> None:
        """Stop following the source (the last object stays usable); idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._unsubscribe()
