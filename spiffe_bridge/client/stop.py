"""Ending a watch from outside its stream: ``StopSignal`` (the Broker API: the referenced process exited)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["StopSignal"]


class StopSignal:
    """Ends a watch for a reason outside its stream (the Broker API: the referenced process exited).

    ``stop(reason)`` cancels the stream's current call; the watch then raises ``reason``
    instead of reconnecting. Thread-safe: ``stop`` may come from any thread.
    """

    def __init__(self) -> None:
        self.reason: Exception | None = None
        self._cancel: Callable[[], Any] | None = None

    def attach(self, cancel: Callable[[], Any]) -> None:
        """The watch's current call; cancelled at once if the signal already fired."""
        self._cancel = cancel
        if self.reason is not None:
            cancel()

    def stop(self, reason: Exception) -> None:
        """End the watch with ``reason``."""
        if self.reason is None:
            self.reason = reason
        cancel = self._cancel
        if cancel is not None:
            cancel()
