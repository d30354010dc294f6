"""Reload actions: what happens after new credentials are fully on disk.

The runner calls ``after_write(first, changed)`` once every output of an
update is in place: ``first`` on the first complete write of this run,
``changed`` when any file's content or mode actually changed (identical
re-deliveries never reload). Actions:

* :class:`SignalPidFile` -- spiffe-helper's ``pid_file_name`` + ``renew_signal``;
  the PID is re-read every time and briefly retried while the process restarts.
* :class:`ManagedChild` -- spiffe-helper's ``cmd``/``cmd_args``: started after
  the first write, sent ``renew_signal`` on rotation, started again on the
  next rotation if it had exited.
* :class:`WrapperChild` -- ``spiffe-bridge run -- prog args``: started after the
  first write, sent ``renew_signal`` on rotation, receives forwarded signals;
  its exit ends the sidecar with its exit code.
* :class:`RunCommand` -- ``reload_command``: an argv (no shell) run to
  completion after each change.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

log = logging.getLogger("spiffe_bridge.sidecar.actions")

#: How long a stopped child gets between SIGTERM and SIGKILL.
STOP_GRACE = 10.0


class Action(Protocol):
    """Something to do once new files are in place."""

    def after_write(self, first: bool, changed: bool) -> bool:
        """React to a complete write; return False when the action failed."""
        ...

    def stop(self) -> None:
        """Release resources at shutdown (stop children)."""
        ...


def exit_code(returncode: int) -> int:
    """A shell-style exit code: negative (killed by signal n) becomes 128 + n."""
    return 128 - returncode if returncode < 0 else returncode


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
        self._stop = threading.Event()

    def _read_pid(self) -> int:
        with open(self.path, encoding="ascii", errors="replace") as fh:
            text = fh.read(64).strip()
        if not text.isdigit() or not 0 < int(text) < 2**31:  # pid_t: os.kill overflows beyond it
            raise ValueError(f"{text[:24]!r} is not a process ID")
        return int(text)

    def after_write(self, first: bool, changed: bool) -> bool:
        if not changed:
            return True
        deadline = time.monotonic() + (0.0 if first else self.retry_for)
        delay = 0.05
        while True:
            try:
                pid = self._read_pid()
                os.kill(pid, self.sig)
            except (OSError, ValueError) as exc:
                if isinstance(exc, PermissionError):
                    log.error("not allowed to signal the PID in %s: %s", self.path, exc)
                    return False
                if time.monotonic() + delay > deadline or self._stop.is_set():
                    level = logging.INFO if first else logging.ERROR
                    log.log(level, "could not signal the process in %s: %s", self.path, exc)
                    return first
                self._stop.wait(delay)
                delay = min(delay * 2, 1.0)
                continue
            log.info("sent %s to PID %d (from %s)", self.sig.name, pid, self.path)
            return True

    def stop(self) -> None:
        self._stop.set()


class _Child:
    """A child process started on the first write and signalled on later changes."""

    def __init__(self, argv: Sequence[str], sig: signal.Signals | None) -> None:
        if not argv:
            raise ValueError("a child command needs at least the program")
        self.argv = list(argv)
        self.sig = sig
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = False

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.argv)  # inherits stdin/stdout/stderr, as spiffe-helper does
        log.info("started %s (pid %d)", self.argv[0], proc.pid)
        return proc

    def _signal(self) -> bool:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return False
        if self.sig is None:
            log.info("%s is running; no renew_signal configured, not signalling", self.argv[0])
            return True
        try:
            proc.send_signal(self.sig)
        except ProcessLookupError:
            return False
        log.info("sent %s to %s (pid %d)", self.sig.name, self.argv[0], proc.pid)
        return True

    def forward(self, sig: int) -> bool:
        """Send ``sig`` to the child if it runs; False if there is none."""
        with self._lock:
            proc = self.proc
            if proc is None or proc.poll() is not None:
                return False
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                return False
            return True

    def stop(self) -> None:
        """SIGTERM the child, SIGKILL it after STOP_GRACE seconds."""
        with self._lock:
            self._stopping = True
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            log.warning("%s did not exit after SIGTERM; killing it", self.argv[0])
            proc.kill()
            proc.wait()


class ManagedChild(_Child):
    """spiffe-helper's ``cmd``: start once files exist, signal on rotation, restart if it exited."""

    def after_write(self, first: bool, changed: bool) -> bool:
        with self._lock:
            if self._stopping:
                return True
            if self.proc is not None and self.proc.poll() is None:
                return self._signal() if changed else True
            if self.proc is not None:
                if not changed:
                    return True
                code = exit_code(self.proc.returncode)
                log.info("%s had exited (code %d); starting it again", self.argv[0], code)
            try:
                self.proc = self._start()
            except OSError as exc:
                log.error("cannot start %s: %s", self.argv[0], exc)
                return False
            return True


class WrapperChild(_Child):
    """``run -- prog args``: started once, signalled on rotation; its exit is the sidecar's exit.

    ``on_exit(code)`` is called from a waiter thread when the child ends (or
    with 127/126 when it cannot be started, as shells do).
    """

    def __init__(
        self, argv: Sequence[str], sig: signal.Signals | None, on_exit: Callable[[int], None]
    ) -> None:
        super().__init__(argv, sig)
        self.on_exit = on_exit
        self.started = threading.Event()

    def after_write(self, first: bool, changed: bool) -> bool:
        with self._lock:
            if self._stopping:
                return True
            if self.proc is None:
                try:
                    self.proc = self._start()
                except OSError as exc:
                    log.error("cannot start %s: %s", self.argv[0], exc)
                    code = 127 if isinstance(exc, FileNotFoundError) else 126
                    threading.Thread(target=self.on_exit, args=(code,), daemon=True).start()
                    return False
                self.started.set()
                threading.Thread(target=self._wait, name="spiffe-bridge-wrapper", daemon=True).start()
                return True
            return self._signal() if changed else True

    def _wait(self) -> None:
        proc = self.proc
        assert proc is not None
        code = exit_code(proc.wait())
        log.info("%s exited with code %d", self.argv[0], code)
        self.on_exit(code)


class RunCommand:
    """``reload_command``: run an argv to completion after each change (no shell)."""

    def __init__(self, argv: Sequence[str], timeout: float = 30.0) -> None:
        if not argv:
            raise ValueError("reload_command needs at least the program")
        self.argv = list(argv)
        self.timeout = timeout

    def after_write(self, first: bool, changed: bool) -> bool:
        if not changed:
            return True
        try:
            result = subprocess.run(self.argv, timeout=self.timeout or None, check=False)
        except subprocess.TimeoutExpired:
            log.error("reload command %s timed out after %.0fs (killed)", self.argv[0], self.timeout)
            return False
        except OSError as exc:
            log.error("cannot run reload command %s: %s", self.argv[0], exc)
            return False
        if result.returncode != 0:
            log.error("reload command %s exited with code %d", self.argv[0], exit_code(result.returncode))
            return False
        log.info("reload command %s succeeded", self.argv[0])
        return True

    def stop(self) -> None:
        return None


class Actions:
    """Several actions run in order; the result is False if any failed."""

    def __init__(self, actions: Sequence[Action]) -> None:
        self.actions = list(actions)

    def after_write(self, first: bool, changed: bool) -> bool:
        ok = True
        for action in self.actions:
            try:
                ok = action.after_write(first, changed) and ok
            except Exception:
                log.exception("reload action %r failed", action)
                ok = False
        return ok

    def stop(self) -> None:
        for action in self.actions:
            try:
                action.stop()
            except Exception:
                log.exception("stopping %r failed", action)

    def __bool__(self) -> bool:
        return bool(self.actions)
