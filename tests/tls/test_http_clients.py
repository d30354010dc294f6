"""HTTP clients (http.client, urllib, httpx, requests) against an HTTPS server on SpiffeSSLContext."""

from __future__ import annotations

import http.client
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tls_peers import CLIENT_ID, IO_TIMEOUT, SERVER_ID

from spiffe_bridge import X509Source
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.tls import (
    PeerNotAuthorizedError,
    SpiffeSSLContext,
    authorize_id,
    client_ssl_context,
    peer_spiffe_id,
    server_ssl_context,
)


class WhoAmI(BaseHTTPRequestHandler):
    """Answers with the SPIFFE ID the server authorized for this connection."""

    def do_GET(self) -> None:
        body = str(peer_spiffe_id(self.connection)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class SpiffeHTTPServer(ThreadingHTTPServer):
    """Handshakes in the worker thread, so a slow or refused client never blocks accept()."""

    daemon_threads = True

    def __init__(self, context: SpiffeSSLContext) -> None:
        self.context = context
        super().__init__(("127.0.0.1", 0), WhoAmI)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(IO_TIMEOUT)
        with self.context.wrap_socket(request, server_side=True) as tls:
            self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # refused handshakes end here; the tests look at the client side


@pytest.fixture
def https_port(source: X509Source) -> Iterator[int]:
    with server_ssl_context(source, authorize_id(CLIENT_ID), svid_hint="server") as ctx:
        server = SpiffeHTTPServer(ctx)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()
            thread.join(IO_TIMEOUT)


@pytest.fixture
def client_ctx(source: X509Source) -> Iterator[SpiffeSSLContext]:
    with client_ssl_context(source, authorize_id(SERVER_ID), svid_hint="client") as ctx:
        yield ctx


def test_http_client(https_port: int, client_ctx: SpiffeSSLContext) -> None:
    conn = http.client.HTTPSConnection("localhost", https_port, context=client_ctx, timeout=IO_TIMEOUT)
    try:
        conn.connect()
        assert isinstance(conn.sock, socket.socket)
        assert peer_spiffe_id(conn.sock) == SpiffeId.parse(SERVER_ID)  # type: ignore[arg-type]
        conn.request("GET", "/")
        assert conn.getresponse().read() == CLIENT_ID.encode()
    finally:
        conn.close()


def test_urllib(https_port: int, client_ctx: SpiffeSSLContext) -> None:
    url = f"https://localhost:{https_port}/"
    with urllib.request.urlopen(url, context=client_ctx, timeout=IO_TIMEOUT) as response:
        assert response.read() == CLIENT_ID.encode()


def test_urllib_refuses_an_unauthorized_server(https_port: int, source: X509Source) -> None:
    ctx = client_ssl_context(source, authorize_id("spiffe://example.org/db"), svid_hint="client")
    with ctx, pytest.raises(urllib.error.URLError) as info:
        urllib.request.urlopen(f"https://localhost:{https_port}/", context=ctx, timeout=IO_TIMEOUT)
    assert isinstance(info.value.reason, PeerNotAuthorizedError)
    assert SERVER_ID in str(info.value.reason)


def test_httpx(https_port: int, client_ctx: SpiffeSSLContext) -> None:
    httpx = pytest.importorskip("httpx")
    with httpx.Client(verify=client_ctx, timeout=IO_TIMEOUT) as client:
        assert client.get(f"https://localhost:{https_port}/").text == CLIENT_ID


def test_requests(https_port: int, client_ctx: SpiffeSSLContext) -> None:
    requests: Any = pytest.importorskip("requests")

    class SpiffeAdapter(requests.adapters.HTTPAdapter):  # type: ignore[misc]
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = client_ctx
            kwargs["assert_hostname"] = False  # SPIFFE: the authorizer checks the URI SAN
            super().init_poolmanager(*args, **kwargs)

    with requests.Session() as session:
        session.mount("https://", SpiffeAdapter())
        response = session.get(f"https://localhost:{https_port}/", timeout=IO_TIMEOUT)
    assert response.text == CLIENT_ID
