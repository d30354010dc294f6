"""Child processes on the event loop: learn of an exit without a thread, reap at once, stop in bounds.

A child started with :class:`subprocess.Popen` is watched through a pidfd
(``os.pidfd_open``, Linux 5.3+) registered with the loop: it becomes readable
when the child exits, and the child is reaped right then, so none lingers as a
zombie. Where pidfds are not available a worker thread waits instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess

log = logging.getLogger("spiffe_bridge.sidecar.process")


def exit_code(returncode: int) -> int:
    """A shell-style exit code: negative (killed by signal n) becomes 128 + n."""
    return 128 - returncode if returncode < 0 else returncode


async def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """Wait until ``proc`` exits, reap it, return its shell-style exit code."""
    if proc.poll() is not None:
        return exit_code(proc.returncode)
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd support: a worker thread waits instead
        return exit_code(await asyncio.to_thread(proc.wait))
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    try:

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    return exit_code(proc.wait())  # the child is gone: this only reaps it


async def stop(proc: subprocess.Popen[bytes], grace: float, name: str) -> int:
    """SIGTERM ``proc``, SIGKILL it after ``grace`` seconds; its exit code once reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    try:
        async with asyncio.timeout(grace):
            return await wait_exit(proc)
    except TimeoutError:
        log.warning("%s did not exit after SIGTERM; killing it", name)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        return await wait_exit(proc)


#: Bytes of a reload command's stdout (and of its stderr) kept for the log; the rest is read and dropped.
OUTPUT_LIMIT = 4096


class _Capture(asyncio.Protocol):
    """Reads one pipe of a child on the loop, keeping the first ``limit`` bytes (never blocks it)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        room = self.limit - len(self.data)
        self.data += data[:room] if room > 0 else b""
        self.dropped += max(0, len(data) - max(room, 0))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def text(self) -> str:
        text = self.data.decode("utf-8", errors="replace").rstrip()
        return text + (f" [... {self.dropped} more bytes]" if self.dropped else "")


class Output:
    """The captured stdout and stderr of a child started with ``stdout=PIPE, stderr=PIPE``."""

    def __init__(self, out: _Capture, err: _Capture) -> None:
        self._pipes = (out, err)

    @classmethod
    async def attach(cls, proc: subprocess.Popen[bytes], limit: int = OUTPUT_LIMIT) -> Output:
        """Start reading the child's pipes on the running loop."""
        loop = asyncio.get_running_loop()
        captures = []
        for pipe in (proc.stdout, proc.stderr):
            capture = _Capture(limit)
            assert pipe is not None
            await loop.connect_read_pipe(lambda c=capture: c, pipe)  # type: ignore[misc]
            captures.append(capture)
        return cls(*captures)

    async def finish(self, grace: float = 1.0) -> tuple[str, str]:
        """(stdout, stderr) once both pipes end, or after ``grace`` if a grandchild holds them open."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(c.closed for c in self._pipes))
        self.close()
        out, err = self._pipes
        return out.text(), err.text()

    def close(self) -> None:
        """Stop reading (the pipes close)."""
        for capture in self._pipes:
            if capture.transport is not None:
                capture.transport.close()
