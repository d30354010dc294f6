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
