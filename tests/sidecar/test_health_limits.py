"""The health server's limits (issue #14.3): idle or slow clients cost a bounded number of fds."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from _support.wait import wait_until
from sidecar_helpers import http_get

from spiffe_bridge.health import HealthServer


class Always:
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return True

    def snapshot(self) -> dict[str, object]:
        return {}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def server() -> Iterator[HealthServer]:
    srv = HealthServer(Always(), port=0, max_connections=4, read_timeout=0.5).start()
    yield srv
    srv.stop()


def test_idle_connections_are_capped_and_timed_out(server: HealthServer) -> None:
    before = open_fds()
    idle = [socket.create_connection(server.address) for _ in range(40)]
    try:
        inner = server._server  # the asyncio server, to read how many it holds
        wait_until(lambda: inner.connections == 4, "the server to take its 4 connections")
        # 40 client sockets plus at most 4 accepted ones: the rest wait in the kernel backlog.
        assert open_fds() - before <= 40 + 4
        assert inner.connections == 4
        idle[0].settimeout(5)
        assert idle[0].recv(1) == b""  # dropped by the server after its read timeout
    finally:
        for sock in idle:
            sock.close()
    # Clients that gave up are drained from the backlog at once, and probes get through again.
    code, _ = http_get("http://{}:{}/live".format(*server.address))
    assert code == 200
    wait_until(lambda: open_fds() <= before, "every accepted connection closed")


def test_one_answer_per_connection_then_close(server: HealthServer) -> None:
    with socket.create_connection(server.address) as sock:
        sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\nGET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 1
    assert b"Connection: close" in data


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /live HTTP/1.1\r\n\r\n", b"405"),
        (b"garbage\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 9000, b"431"),
        (b"HEAD /live HTTP/1.0\r\n\r\n", b"200"),
    ],
)
def test_bad_requests_get_a_clear_status(server: HealthServer, request_bytes: bytes, status: bytes) -> None:
    with socket.create_connection(server.address) as sock:
        sock.sendall(request_bytes)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.split(b" ", 2)[1] == status
    if request_bytes.startswith(b"HEAD"):
        assert data.endswith(b"\r\n\r\n")  # no body
