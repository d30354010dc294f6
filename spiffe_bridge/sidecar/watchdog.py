"""Noticing a stalled event loop from outside it: heartbeat on the loop, a small watchdog thread beside it.

Everything the daemon does runs on one event loop, and ``/live`` is answered by
that same loop, so a loop that stopped making progress (something blocked it)
cannot report that itself. Two parts make it observable:

* :class:`Heartbeat` -- a timer on the loop that records ``time.monotonic()``
  every ``interval`` seconds; it only fires when the loop gets around to it.
* :class:`Watchdog` -- a thread that wakes every ``interval`` seconds and reads
  the heartbeat. While it is fresh it pings systemd (``WATCHDOG=1``, when the
  unit has ``WatchdogSec=``). Once it is older than ``stall_after`` it stops
  pinging (systemd then kills and restarts the unit) and answers every
  connection on the health port itself, with 503 "event loop stalled", so a
  kubelet liveness probe fails at once instead of timing out. It takes
  connections only while the loop is stalled; when the heartbeat is fresh again
  the loop serves them as before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable

from spiffe_bridge.health import MAX_HEAD, parse_request, response
from spiffe_bridge.sdnotify import notify

log = logging.getLogger("spiffe_bridge.sidecar.watchdog")

#: Seconds the watchdog gives a client to send its request while the loop is stalled.
STALL_READ_TIMEOUT = 1.0


def systemd_interval() -> float | None:
    """Half of systemd's ``WATCHDOG_USEC`` when the watchdog is meant for this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class Heartbeat:
    """The loop's last sign of life (monotonic seconds), refreshed by a timer on the loop."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.beat = time.monotonic()
        self._handle: object = None

    def start(self) -> None:
        """Begin beating on the running loop."""
        import asyncio

        loop = asyncio.get_running_loop()

        def tick() -> None:
            self.beat = time.monotonic()
            self._handle = loop.call_later(self.interval, tick)

        tick()

    def stop(self) -> None:
        """Stop beating."""
        cancel = getattr(self._handle, "cancel", None)
        if cancel is not None:
            cancel()

    def age(self) -> float:
        """Seconds since the loop last got to the heartbeat."""
        return time.monotonic() - self.beat


class Watchdog:
    """The thread that pings systemd while the loop is alive and answers probes when it is not."""

    def __init__(
        self,
        heartbeat: Heartbeat,
        stall_after: float,
        *,
        interval: float,
        systemd: bool,
        health_socket: socket.socket | None = None,
        notify_fn: Callable[[str], bool] = notify,
    ) -> None:
        self.heartbeat = heartbeat
        self.stall_after = stall_after
        self.interval = interval
        self.systemd = systemd
        self.health_socket = health_socket
        self.notify = notify_fn
        self.stalled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spiffe-bridge-watchdog", daemon=True)

    def start(self) -> Watchdog:
        """Start the thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + STALL_READ_TIMEOUT + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            age = self.heartbeat.age()
            if age <= self.stall_after:
                if self.stalled:
                    log.warning("event loop made progress again after %.1fs", age)
                    self.stalled = False
                if self.systemd:
                    self.notify("WATCHDOG=1")
                self._stop.wait(self.interval)
                continue
            if not self.stalled:
                log.error(
                    "event loop made no progress for %.1fs; liveness fails%s",
                    age,
                    " and systemd's watchdog is no longer fed" if self.systemd else "",
                )
                self.stalled = True
            if self.health_socket is None:
                self._stop.wait(self.interval)
            else:
                self._answer_one(age)

    def _answer_one(self, age: float) -> None:
        """Wait up to ``interval`` for a health connection and answer it with 503."""
        sock = self.health_socket
        assert sock is not None
        try:
            readable, _, _ = select.select([sock], [], [], self.interval)
            if not readable:
                return
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # the loop took it: it is alive again
        except OSError:
            self._stop.wait(self.interval)  # closed at shutdown, or out of fds
            return
        with conn, contextlib.suppress(OSError):
            conn.settimeout(STALL_READ_TIMEOUT)
            head = b""
            while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) < MAX_HEAD:
                chunk = conn.recv(MAX_HEAD - len(head))
                if not chunk:
                    break
                head += chunk
            request = parse_request(head)
            body = {
                "status": "Service Unavailable",
                "health": {"live": False, "ready": False, "event_loop_stalled_seconds": round(age, 3)},
            }
            head_only = request is not None and request[0] == "HEAD"
            conn.sendall(response(503, json.dumps(body).encode(), "application/json", head_only=head_only))
            conn.shutdown(socket.SHUT_WR)
