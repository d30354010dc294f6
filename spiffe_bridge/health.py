"""HTTP liveness, readiness and metrics endpoints on an asyncio server with hard limits.

Shared by the sidecar and the relay: each hands in a ``HealthSource``. Responses
keep spiffe-helper's JSON shape, ``{"status": "OK" | "Service Unavailable",
"health": {...}}`` with status 200 or 503; what ``health`` holds is the source's
snapshot (for the sidecar: ``file_write_statuses`` as spiffe-helper, plus
stream state, identity state and seconds until the credentials expire).
Unlike spiffe-helper the server binds ``127.0.0.1`` unless told otherwise.

A probe port must never cost the process its job, so the server holds at most
``max_connections`` connections (more wait in the kernel's backlog, so the
process never spends more file descriptors than that here), gives each one
``read_timeout`` seconds to send its request head (8 KiB at most), answers once
with ``Connection: close`` and hangs up: no keep-alive, no thread per connection.
:class:`AsyncHealthServer` runs on the caller's loop (the sidecar's);
:class:`HealthServer` runs one on a thread of its own, for threaded callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Protocol

log = logging.getLogger("spiffe_bridge.health")

MetricsRenderer = Callable[[], tuple[bytes, str]]
Route = Callable[[], tuple[int, bytes, str]]

#: Connections served at once; further ones wait in the listen backlog.
MAX_CONNECTIONS = 16
#: Seconds a client has to send its request head, and to take the response.
READ_TIMEOUT = 5.0
#: Largest request head read; longer ones get 431 and are closed.
MAX_HEAD = 8192
#: Seconds to wait, after answering, for the client to hang up first.
LINGER = 1.0
_BACKLOG = 64


class HealthSource(Protocol):
    """What the endpoints report; called on the server's loop, so it must answer at once."""

    def live(self) -> bool:
        """True while the process does its job (a failed liveness probe restarts it)."""
        ...

    def ready(self) -> bool:
        """True while it can serve its consumers."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready details for the response body's ``health`` member."""
        ...


def response(code: int, body: bytes, ctype: str, *, head_only: bool = False) -> bytes:
    """One complete HTTP/1.1 response that closes the connection."""
    phrase = HTTPStatus(code).phrase
    head = (
        f"HTTP/1.1 {code} {phrase}\r\nServer: spiffe-bridge\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else body)


def check(status: HealthSource, good: bool) -> tuple[int, bytes, str]:
    """spiffe-helper's JSON body for a probe, 200 when ``good`` else 503."""
    code = HTTPStatus.OK if good else HTTPStatus.SERVICE_UNAVAILABLE
    body: dict[str, Any] = {"status": code.phrase, "health": status.snapshot()}
    return code.value, json.dumps(body).encode(), "application/json"


def parse_request(head: bytes) -> tuple[str, str] | None:
    """(method, path without query) of a request head, None when it is not HTTP/1.x."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    return method, target.split("?", 1)[0]


def listen(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket; OSError naming the address if it cannot bind."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise OSError(exc.errno, f"health server cannot listen on {host}:{port}: {exc.strerror}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"health server cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


class AsyncHealthServer:
    """Serves ``liveness_path``, ``readiness_path`` and optionally ``metrics_path`` on a running loop.

    The socket is bound in the constructor (a taken port fails before anything
    else starts); ``start()`` begins accepting on the running loop.
    """

    def __init__(
        self,
        status: HealthSource,
        *,
        host: str = "127.0.0.1",
        port: int = 8081,
        liveness_path: str = "/live",
        readiness_path: str = "/ready",
        metrics_path: str | None = None,
        metrics: MetricsRenderer | None = None,
        max_connections: int = MAX_CONNECTIONS,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.routes: dict[str, Route] = {
            liveness_path: lambda: check(status, status.live()),
            readiness_path: lambda: check(status, status.ready()),
        }
        if metrics_path and metrics is not None:
            self.routes[metrics_path] = lambda: (200, *metrics())
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.socket = listen(host, port)
        self._accepting: asyncio.Task[None] | None = None
        self._open: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when 0 was asked for."""
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return len(self._open)

    def start(self) -> AsyncHealthServer:
        """Start accepting on the running loop."""
        self._accepting = asyncio.create_task(self._accept(), name="spiffe-bridge-health")
        host, port = self.address
        log.info("health server listening on http://%s:%d", host, port)
        return self

    async def stop(self) -> None:
        """Stop accepting, drop open connections, close the socket."""
        tasks = [t for t in (self._accepting, *self._open) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.socket.close()

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.max_connections)
        while True:
            await slots.acquire()
            try:
                conn, _ = await loop.sock_accept(self.socket)
            except OSError as exc:  # EMFILE and friends: the client waits in the backlog
                slots.release()
                log.warning("health server cannot accept a connection: %s", exc)
                await asyncio.sleep(0.5)
                continue
            task = asyncio.create_task(self._serve(conn), name="spiffe-bridge-health-conn")
            self._open.add(task)

            def done(t: asyncio.Task[None]) -> None:
                self._open.discard(t)
                slots.release()

            task.add_done_callback(done)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        with conn:
            conn.setblocking(False)
            try:
                async with asyncio.timeout(self.read_timeout):
                    head = await self._read_head(loop, conn)
                    await loop.sock_sendall(conn, self._answer(head))
                    conn.shutdown(socket.SHUT_WR)
                async with asyncio.timeout(min(self.read_timeout, LINGER)):
                    # Read what the client still sends until it hangs up: closing with unread
                    # data would reset the connection and could discard our answer.
                    drained = 0
                    while drained < MAX_HEAD * 8 and (chunk := await loop.sock_recv(conn, MAX_HEAD)):
                        drained += len(chunk)
            except (TimeoutError, OSError):
                return

    @staticmethod
    async def _read_head(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes | None:
        """The request head, or None when it is too long (or the client hung up early)."""
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            if len(data) >= MAX_HEAD:
                return None
            chunk = await loop.sock_recv(conn, MAX_HEAD - len(data))
            if not chunk:
                return data or None
            data += chunk
        return data

    def _answer(self, head: bytes | None) -> bytes:
        if head is None:
            return response(431, b"request head too large\n", "text/plain")
        request = parse_request(head)
        if request is None:
            return response(400, b"bad request\n", "text/plain")
        method, path = request
        if method not in ("GET", "HEAD"):
            return response(405, b"method not allowed\n", "text/plain")
        route = self.routes.get(path)
        if route is None:
            return response(404, b"not found\n", "text/plain", head_only=method == "HEAD")
        try:
            code, body, ctype = route()
        except Exception:
            log.exception("health handler for %s failed", path)
            code, body, ctype = 500, b"internal error\n", "text/plain"
        return response(code, body, ctype, head_only=method == "HEAD")


class HealthServer:
    """An :class:`AsyncHealthServer` on a thread and loop of its own, for threaded callers.

    The source is called on that thread (the relay's reads its loop with a deadline).
    """

    def __init__(self, status: HealthSource, **kwargs: Any) -> None:
        self._server = AsyncHealthServer(status, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="spiffe-bridge-health", daemon=True)
        self._started = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when 0 was asked for."""
        return self._server.address

    def start(self) -> HealthServer:
        """Start serving on the background thread."""
        self._thread.start()
        self._started.wait()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        # Started from inside run_forever, so a stop() right after start() is not lost.
        self._loop.call_soon(self._begin)
        self._loop.run_forever()
        self._loop.run_until_complete(self._server.stop())
        self._loop.close()

    def _begin(self) -> None:
        self._server.start()
        self._started.set()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        else:
            self._server.socket.close()
            self._loop.close()
