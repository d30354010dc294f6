"""End a Broker API watch when the referenced process exits.

SPIRE 1.15.3 stops sending for a PID whose process has exited but keeps the
stream open, and the Broker API says the broker MUST then drop what it holds
for that workload (§4.9). So a watch on a ``WorkloadPIDReference`` holds a
pidfd (Linux 5.3+) on an event loop; when it becomes readable the process is
gone and the watch ends with ``WorkloadExitedError``. A pidfd names one
process, not a number, so a recycled PID cannot keep the watch alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

from spiffe_bridge.broker.reference import Reference, WorkloadPIDReference
from spiffe_bridge.client._core import StopSignal
from spiffe_bridge.errors import WorkloadExitedError


class ProcessExit:
    """Fires ``signal`` with a WorkloadExitedError once process ``pid`` has exited."""

    def __init__(self, pid: int, loop: asyncio.AbstractEventLoop, signal: StopSignal) -> None:
        self.pid = pid
        self._loop = loop
        self._signal = signal
        self._fd: int | None = None

    def start(self) -> None:
        """Open the pidfd and watch it on the loop (from any thread); an absent process fires at once."""
        try:
            self._fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self._signal.stop(self._error())
            return
        self._loop.call_soon_threadsafe(self._loop.add_reader, self._fd, self._fired)

    def _error(self) -> WorkloadExitedError:
        return WorkloadExitedError(f"the referenced process (pid {self.pid}) has exited")

    def _fired(self) -> None:
        self._release()
        self._signal.stop(self._error())

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                self._loop.remove_reader(fd)
            os.close(fd)

    def close(self) -> None:
        """Stop watching (idempotent; from any thread)."""
        if self._fd is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._release)
        except RuntimeError:  # the loop is closed: nothing watches the fd any more
            self._release()


@contextlib.contextmanager
def ends_on_exit(ref: Reference, loop: asyncio.AbstractEventLoop) -> Iterator[StopSignal | None]:
    """For a PID reference, a stop signal fired when that process exits, watched on ``loop``.

    None for other references (nothing to watch): what both clients' watches pass on.
    """
    if not isinstance(ref, WorkloadPIDReference):
        yield None
        return
    stop = StopSignal()
    exited = ProcessExit(ref.pid, loop, stop)
    exited.start()
    try:
        yield stop
    finally:
        exited.close()
