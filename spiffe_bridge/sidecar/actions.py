"""Reload actions: what happens after new credentials are fully on disk, on the daemon's event loop.

The runner awaits ``after_write(first, changed)`` once every output of an
update is in place: ``first`` on the first complete write of this run,
``changed`` when any file's content or mode actually changed (identical
re-deliveries never reload). Nothing here blocks the loop, and every action
ends within a bound. Actions:

* :class:`SignalPidFile` -- spiffe-helper's ``pid_file_name`` + ``renew_signal``;
  the PID is re-read every time (non-blocking, never through a symlink, only
  from a regular file) and briefly retried while the process restarts.
* :class:`ManagedChild` -- spiffe-helper's ``cmd``/``cmd_args``: started after
  the first write, sent ``renew_signal`` on rotation, started again on the
  next rotation if it had exited. It is reaped the moment it exits, and a
  crash is reported through ``on_exit`` (the runner counts it as a failed reload).
* :class:`WrapperChild` -- ``spiffe-bridge run -- prog args``: started after the
  first write, sent ``renew_signal`` on rotation, receives forwarded signals;
  its exit ends the sidecar with its exit code.
* :class:`RunCommand` -- ``reload_command``: an argv (no shell) run to
  completion after each change, killed after its timeout. Its stdout and
  stderr are read on the loop (the first 4 KiB of each) and logged as fields of
  one record, never copied raw into the daemon's log stream. ``cmd`` children
  and the wrapped program inherit stdio instead, as with spiffe-helper.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from spiffe_bridge.logs import redact
from spiffe_bridge.sidecar.process import Output, exit_code, stop, wait_exit

__all__ = ["Action", "Actions", "ManagedChild", "RunCommand", "SignalPidFile", "WrapperChild", "exit_code"]

log = logging.getLogger("spiffe_bridge.sidecar.actions")

#: How long a stopped child gets between SIGTERM and SIGKILL.
STOP_GRACE = 10.0
#: The longest a reload_command may run, also when its timeout is 0 ("no limit" before #14.2).
MAX_COMMAND_SECONDS = 600.0
_OPEN_PID = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC

#: Called on the loop with a child's shell-style exit code.
OnExit = Callable[[int], None]


class Action(Protocol):
    """Something to do once new files are in place."""

    async def after_write(self, first: bool, changed: bool) -> bool:
        """React to a complete write; return False when the action failed."""
        ...

    async def stop(self) -> None:
        """Release resources at shutdown (stop children)."""
        ...


def read_pid(path: str) -> int:
    """The PID in ``path``: opened without blocking or following a link, and only a regular file.

    A FIFO, device or socket planted there would otherwise block or feed the reader
    forever (#14.2); it is refused with ValueError like any unparsable content.
    """
    fd = os.open(path, _OPEN_PID)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file")
        text = os.read(fd, 64).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    if not text.isdigit() or not 0 < int(text) < 2**31:  # pid_t: os.kill overflows beyond it
        raise ValueError(f"{text[:24]!r} is not a process ID")
    return int(text)


class SignalPidFile:
    """Send ``sig`` to the PID written in ``path``, re-reading the file every time.

    When the file is missing, unparsable or names a dead process (the consumer
    is restarting), retry with doubling delays for up to ``retry_for`` seconds.
    On the first write a missing process is normal (the consumer may start
    after us, spiffe-helper#251), so that case is logged quietly.
    """

    def __init__(self, path: str, sig: signal.Signals, retry_for: float = 5.0) -> None:
        self.path = path
        self.sig = sig
        self.retry_for = retry_for

    async def after_write(self, first: bool, changed: bool) -> bool:
        if not changed:
            return True
        deadline = time.monotonic() + (0.0 if first else self.retry_for)
        delay = 0.05
        while True:
            try:
                pid = read_pid(self.path)
                os.kill(pid, self.sig)
            except (OSError, ValueError) as exc:
                if isinstance(exc, PermissionError):
                    log.error("not allowed to signal the PID in %s: %s", self.path, exc)
                    return False
                if time.monotonic() + delay > deadline:
                    level = logging.INFO if first else logging.ERROR
                    log.log(level, "could not signal the process in %s: %s", self.path, exc)
                    return first
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            log.info("sent %s to PID %d (from %s)", self.sig.name, pid, self.path)
            return True

    async def stop(self) -> None:
        return None


class _Child:
    """A child process started on the first write, signalled on later changes, reaped on exit."""

    def __init__(self, argv: Sequence[str], sig: signal.Signals | None, on_exit: OnExit | None) -> None:
        if not argv:
            raise ValueError("a child command needs at least the program")
        self.argv = list(argv)
        self.sig = sig
        self.on_exit = on_exit
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._waiter: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        """True while the child has not exited."""
        return self.proc is not None and self.returncode is None and self.proc.poll() is None

    def _start(self) -> None:
        self.proc = subprocess.Popen(self.argv)  # inherits stdin/stdout/stderr, as spiffe-helper does
        self.returncode = None
        log.info("started %s (pid %d)", self.argv[0], self.proc.pid)
        self._waiter = asyncio.create_task(self._wait(self.proc), name=f"spiffe-bridge-child-{self.proc.pid}")

    async def _wait(self, proc: subprocess.Popen[bytes]) -> None:
        code = await wait_exit(proc)
        self.returncode = code
        if not self._stopping:
            log.log(
                logging.INFO if code == 0 else logging.ERROR, "%s exited with code %d", self.argv[0], code
            )
            if self.on_exit is not None:
                self.on_exit(code)

    def _signal(self) -> bool:
        if not self.running or self.proc is None:
            return False
        if self.sig is None:
            log.info("%s is running; no renew_signal configured, not signalling", self.argv[0])
            return True
        try:
            self.proc.send_signal(self.sig)
        except ProcessLookupError:
            return False
        log.info("sent %s to %s (pid %d)", self.sig.name, self.argv[0], self.proc.pid)
        return True

    def forward(self, sig: int) -> bool:
        """Send ``sig`` to the child if it runs; False if there is none."""
        if not self.running or self.proc is None:
            return False
        try:
            self.proc.send_signal(sig)
        except ProcessLookupError:
            return False
        return True

    async def stop(self) -> None:
        """SIGTERM the child, SIGKILL it after STOP_GRACE seconds, and reap it."""
        self._stopping = True
        if self.proc is not None:
            await stop(self.proc, STOP_GRACE, self.argv[0])
        if self._waiter is not None:
            await self._waiter


class ManagedChild(_Child):
    """spiffe-helper's ``cmd``: start once files exist, signal on rotation, restart if it exited."""

    def __init__(
        self, argv: Sequence[str], sig: signal.Signals | None, on_exit: OnExit | None = None
    ) -> None:
        super().__init__(argv, sig, on_exit)

    async def after_write(self, first: bool, changed: bool) -> bool:
        if self._stopping:
            return True
        if self.running:
            return self._signal() if changed else True
        if self.proc is not None:
            if not changed:
                return True
            code = exit_code(self.proc.returncode) if self.returncode is None else self.returncode
            log.info("%s had exited (code %d); starting it again", self.argv[0], code)
        try:
            self._start()
        except OSError as exc:
            log.error("cannot start %s: %s", self.argv[0], exc)
            return False
        return True


class WrapperChild(_Child):
    """``run -- prog args``: started once, signalled on rotation; its exit is the sidecar's exit.

    ``on_exit(code)`` is called on the loop when the child ends (or with 127/126
    when it cannot be started, as shells do).
    """

    def __init__(self, argv: Sequence[str], sig: signal.Signals | None, on_exit: OnExit) -> None:
        super().__init__(argv, sig, on_exit)
        self.started = asyncio.Event()

    async def after_write(self, first: bool, changed: bool) -> bool:
        if self._stopping:
            return True
        if self.proc is None:
            try:
                self._start()
            except OSError as exc:
                log.error("cannot start %s: %s", self.argv[0], exc)
                code = 127 if isinstance(exc, FileNotFoundError) else 126
                asyncio.get_running_loop().call_soon(self._exited, code)
                return False
            self.started.set()
            return True
        return self._signal() if changed else True

    def _exited(self, code: int) -> None:
        if self.on_exit is not None:
            self.on_exit(code)


class RunCommand:
    """``reload_command``: an argv run to completion after each change (no shell), killed after ``timeout``.

    Starting it (fork/exec, via vfork) is the only synchronous part; its exit is awaited.
    ``what`` names the command in its log records (an output's ``restart_command`` runs one too).
    """

    def __init__(self, argv: Sequence[str], timeout: float = 30.0, what: str = "reload_command") -> None:
        if not argv:
            raise ValueError(f"{what} needs at least the program")
        self.argv = list(argv)
        self.timeout = min(timeout, MAX_COMMAND_SECONDS) if timeout > 0 else MAX_COMMAND_SECONDS
        self.what = what

    async def after_write(self, first: bool, changed: bool) -> bool:
        return not changed or await self.run() is None

    async def run(self) -> str | None:
        """Run the command once and log the outcome; None on success, else why it failed."""
        name, what = self.argv[0], self.what.replace("_", " ")
        fields: dict[str, Any] = {self.what: name}
        started = time.monotonic()
        try:  # only the spawn is synchronous; the wait is awaited
            proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # noqa: ASYNC220
        except OSError as exc:
            log.error("cannot run %s %s: %s", what, name, exc, extra=fields)
            return f"cannot run {name}: {exc}"
        output = await Output.attach(proc)
        try:
            async with asyncio.timeout(self.timeout):
                code = await wait_exit(proc)
        except TimeoutError:
            await stop(proc, 0.0, name)
            fields.update(self._fields(await output.finish(), started, None))
            log.error("%s %s timed out after %gs (killed)", what, name, self.timeout, extra=fields)
            return f"timed out after {self.timeout:g}s (killed)"
        except asyncio.CancelledError:  # shutting down: do not leave it running
            output.close()
            await stop(proc, 0.0, name)
            raise
        fields.update(self._fields(await output.finish(), started, code))
        if code != 0:
            said = f"; stderr: {fields['stderr'][:200]!r}" if fields["stderr"] else ""
            log.error("%s %s exited with code %d%s", what, name, code, said, extra=fields)
            return f"exited with code {code}"
        log.info("%s %s succeeded", what, name, extra=fields)
        return None

    @staticmethod
    def _fields(output: tuple[str, str], started: float, code: int | None) -> dict[str, Any]:
        """Log fields: exit code, duration and the (bounded, redacted) output, never raw in the stream."""
        stdout, stderr = (redact(text) for text in output)
        return {"exit_code": code, "duration_s": round(time.monotonic() - started, 3),
                "stdout": stdout, "stderr": stderr}  # fmt: skip

    async def stop(self) -> None:
        return None


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class Actions:
    """Several actions run in order; the result is False if any failed.

    An action's methods may also be plain functions (embedders' probes).
    """

    def __init__(self, actions: Sequence[Any]) -> None:
        self.actions = list(actions)

    async def after_write(self, first: bool, changed: bool) -> bool:
        ok = True
        for action in self.actions:
            try:
                ok = bool(await _maybe_await(action.after_write(first, changed))) and ok
            except Exception:
                log.exception("reload action %r failed", action)
                ok = False
        return ok

    async def stop(self) -> None:
        for action in self.actions:
            try:
                await _maybe_await(action.stop())
            except Exception:
                log.exception("stopping %r failed", action)

    def __bool__(self) -> bool:
        return bool(self.actions)
