"""The PermissionDenied window: a span of time in which the dev agent issues no identity.

Like a SPIRE agent that has not attested the caller yet. A timed window wakes every waiter on
the agent's condition when it ends, so ``wait_until(lambda: not agent.denied)`` returns promptly.
"""

from __future__ import annotations

import logging
import math
import threading
import time

_log = logging.getLogger("spiffe_bridge.devagent")


class DenialWindow:
    """Whether callers get PermissionDenied now; guarded by the agent's condition."""

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self._until: float | None = None
        self._timer: threading.Timer | None = None

    @property
    def active(self) -> bool:
        """True inside the window."""
        with self._cond:
            return self._until is not None and time.monotonic() < self._until

    def open(self, duration: float | None) -> None:
        """Start (or restart) the window for ``duration`` seconds, or until ``close``."""
        with self._cond:
            self._cancel_timer()
            if duration is None:
                self._until = math.inf
            else:
                self._until = time.monotonic() + duration
                self._timer = threading.Timer(duration, self._ended)
                self._timer.daemon = True
                self._timer.start()
            _log.info("denying identities %s", "until allowed" if duration is None else f"for {duration}s")
            self._cond.notify_all()

    def close(self) -> None:
        """End the window now."""
        with self._cond:
            self._cancel_timer()
            self._until = None
            _log.info("identities allowed again")
            self._cond.notify_all()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _ended(self) -> None:
        with self._cond:
            _log.info("permission-denied window ended")
            self._cond.notify_all()
