"""Helpers for the dev agent tests: a per-call deadline and a collector tests wait on instead of sleeping."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Deadline of one raw gRPC call to the dev agent (seconds).
CALL_TIMEOUT = 10.0


class Collector(Generic[T]):
    """Collects values from callback threads; ``wait_for`` blocks until a predicate holds."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.items: list[T] = []

    def add(self, item: T) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[T]], bool], timeout: float = 10.0) -> list[T]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.items), timeout):
                raise TimeoutError(f"condition not met; collected {self.items!r}")
            return list(self.items)

    def wait_count(self, n: int, timeout: float = 10.0) -> list[T]:
        return self.wait_for(lambda items: len(items) >= n, timeout)
