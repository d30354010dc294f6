"""HTTPS with SPIFFE mTLS: an ``http.server`` server and urllib, http.client, httpx, requests clients.

    python examples/tls/http_clients.py        # httpx/requests parts run when installed

Every client takes the same ``client_ssl_context``: it is a real
``ssl.SSLContext``. Hostname checks are off by design (SPIFFE identifies peers
by URI SAN; the authorizer checks it), which urllib3/requests must be told
with ``assert_hostname=False``.
"""

from __future__ import annotations

import http.client
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from _agent import CLIENT_ID, SERVER_ID, workload_api

from spiffe_bridge import X509Source
from spiffe_bridge.tls import (
    PeerRefusedError,
    SpiffeSSLContext,
    authorize_id,
    client_ssl_context,
    peer_spiffe_id,
    server_ssl_context,
)


class WhoAmI(BaseHTTPRequestHandler):
    """Replies with the SPIFFE ID the server authorized for this connection."""

    def do_GET(self) -> None:
        body = f"hello {peer_spiffe_id(self.connection)}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class SpiffeHTTPServer(ThreadingHTTPServer):
    """Does the TLS handshake in the worker thread, so slow or refused clients never block accept()."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], context: SpiffeSSLContext) -> None:
        self.context = context
        super().__init__(address, WhoAmI)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except PeerRefusedError as exc:
            print(f"  server refused {client_address}: {exc}")
            return
        with tls:
            self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]


def with_urllib(url: str, ctx: SpiffeSSLContext) -> str:
    with urllib.request.urlopen(url, context=ctx, timeout=10) as response:  # noqa: S310 (https only)
        return str(response.read().decode())


def with_http_client(url: str, ctx: SpiffeSSLContext) -> str:
    host, port = url.split("//")[1].rstrip("/").split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def with_httpx(url: str, ctx: SpiffeSSLContext) -> str:
    import httpx

    with httpx.Client(verify=ctx, timeout=10) as client:
        return client.get(url).text


def with_requests(url: str, ctx: SpiffeSSLContext) -> str:
    import requests
    from requests.adapters import HTTPAdapter

    class SpiffeAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = ctx
            kwargs["assert_hostname"] = False  # the authorizer checks the SPIFFE ID instead
            super().init_poolmanager(*args, **kwargs)

    with requests.Session() as session:
        session.mount("https://", SpiffeAdapter())
        return session.get(url, timeout=10).text


def main() -> None:
    with workload_api() as (address, _), X509Source(address) as source:
        server_ctx = server_ssl_context(source, authorize_id(CLIENT_ID), svid_hint="server")
        server = SpiffeHTTPServer(("127.0.0.1", 0), server_ctx)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"https://localhost:{server.server_address[1]}/"
        with client_ssl_context(source, authorize_id(SERVER_ID), svid_hint="client") as ctx:
            for name, call in [
                ("urllib", with_urllib),
                ("http.client", with_http_client),
                ("httpx", with_httpx),
                ("requests", with_requests),
            ]:
                try:
                    print(f"  {name:12} -> {call(url, ctx).strip()}")
                except ImportError as exc:
                    print(f"  {name:12} -> not installed ({exc.name})")
        server.shutdown()
        server.server_close()
        server_ctx.close()


if __name__ == "__main__":
    main()
