"""HTTP liveness, readiness and metrics endpoints (stdlib ``http.server`` on a thread).

Shared by the sidecar and the relay: each hands in a ``HealthSource``. Responses
keep spiffe-helper's JSON shape, ``{"status": "OK" | "Service Unavailable",
"health": {...}}`` with status 200 or 503; what ``health`` holds is the source's
snapshot (for the sidecar: ``file_write_statuses`` as spiffe-helper, plus
stream state, identity state and seconds until the credentials expire).
Unlike spiffe-helper the server binds ``127.0.0.1`` unless told otherwise.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

log = logging.getLogger("spiffe_bridge.health")

MetricsRenderer = Callable[[], tuple[bytes, str]]


class HealthSource(Protocol):
    """What the endpoints report; called on the HTTP server's threads, so it must be thread-safe."""

    def live(self) -> bool:
        """True while the process does its job (a failed liveness probe restarts it)."""
        ...

    def ready(self) -> bool:
        """True while it can serve its consumers."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready details for the response body's ``health`` member."""
        ...


class HealthServer:
    """Serves ``liveness_path``, ``readiness_path`` and optionally ``metrics_path`` until ``stop()``."""

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
    ) -> None:
        routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {
            liveness_path: lambda: self._check(status, status.live()),
            readiness_path: lambda: self._check(status, status.ready()),
        }
        if metrics_path and metrics is not None:
            routes[metrics_path] = lambda: (200, *metrics())
        handler = _handler_class(routes)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            message = f"health server cannot listen on {host}:{port}: {exc.strerror}"
            raise OSError(exc.errno, message) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="spiffe-bridge-health", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when 0 was asked for."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> HealthServer:
        """Start serving on a background thread."""
        self._thread.start()
        host, port = self.address
        log.info("health server listening on http://%s:%d", host, port)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    @staticmethod
    def _check(status: HealthSource, good: bool) -> tuple[int, bytes, str]:
        code = HTTPStatus.OK if good else HTTPStatus.SERVICE_UNAVAILABLE
        body: dict[str, Any] = {"status": code.phrase, "health": status.snapshot()}
        return code.value, json.dumps(body).encode(), "application/json"


def _handler_class(routes: dict[str, Callable[[], tuple[int, bytes, str]]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "spiffe-bridge"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            route = routes.get(path)
            if route is None:
                code, body, ctype = 404, b"not found\n", "text/plain"
            else:
                try:
                    code, body, ctype = route()
                except Exception:
                    log.exception("health handler for %s failed", path)
                    code, body, ctype = 500, b"internal error\n", "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self.do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return Handler
