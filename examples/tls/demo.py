"""Self-contained mTLS demo: server and client authorize each other by SPIFFE ID, then rotate.

    python examples/tls/demo.py

Runs against an embedded dev agent (or $SPIFFE_ENDPOINT_SOCKET). Shows: a
mutually authorized exchange; a rotation picked up by the *same* context
objects (new certificate serials on new connections, the old connection
still working); and refusals naming the peer's SPIFFE ID.
"""

from __future__ import annotations

import socket
import ssl
import threading

from _agent import CLIENT_ID, SERVER_ID, workload_api
from cryptography import x509

from spiffe_bridge import X509Source
from spiffe_bridge.tls import (
    PeerRefusedError,
    SpiffeSSLContext,
    authorize_id,
    client_ssl_context,
    peer_spiffe_id,
    server_ssl_context,
)


def serial(tls: ssl.SSLSocket) -> str:
    """The peer certificate's serial (shortened), to watch rotations happen."""
    return f"{x509.load_der_x509_certificate(tls.getpeercert(True) or b'').serial_number:x}"[:12]


def run_server(context: SpiffeSSLContext, listener: socket.socket) -> None:
    def handle(conn: socket.socket) -> None:
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                peer = peer_spiffe_id(tls)
                while data := tls.recv(1024):
                    tls.sendall(f"[server sees {peer}, cert {serial(tls)}] ".encode() + data)
        except PeerRefusedError as exc:
            print(f"  server refused a client: {exc}")
        except OSError:
            pass

    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def talk(context: SpiffeSSLContext, port: int, message: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = context.wrap_socket(raw, server_hostname="localhost")
    print(f"  client sees {peer_spiffe_id(tls)}, cert {serial(tls)}")
    tls.sendall(message.encode())
    print("  " + (tls.recv(1024).decode() or "(the server closed the connection)"))
    return tls


def main() -> None:
    with workload_api() as (address, agent), X509Source(address) as source:
        server_ctx = server_ssl_context(source, authorize_id(CLIENT_ID), svid_hint="server")
        client_ctx = client_ssl_context(source, authorize_id(SERVER_ID), svid_hint="client")
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        threading.Thread(target=run_server, args=(server_ctx, listener), daemon=True).start()

        print("1. mutual authorization")
        first = talk(client_ctx, port, "hello")

        if agent is not None:
            print("2. rotation: the agent re-issues both SVIDs; nobody rebuilds a context")
            rotated = {m.hint: m.serial_number for m in agent.rotate()}
            server_ctx.wait_for(lambda c: c.svid(hint="server").leaf.serial_number == rotated["server"])
            client_ctx.wait_for(lambda c: c.svid(hint="client").leaf.serial_number == rotated["client"])
            talk(client_ctx, port, "hello again").close()
            first.sendall(b"old connection still fine")
            print("  " + first.recv(1024).decode())
        first.close()

        print("3. a client that expects another server ID refuses this one")
        with client_ssl_context(source, authorize_id("spiffe://example.org/db"), svid_hint="client") as wrong:
            try:
                talk(wrong, port, "never sent")
            except PeerRefusedError as exc:
                print(f"  client refused the server: {exc}")

        print("4. a server that expects another client ID refuses this one")
        strict_ctx = server_ssl_context(
            source, authorize_id("spiffe://example.org/billing"), svid_hint="server"
        )
        strict = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=run_server, args=(strict_ctx, strict), daemon=True).start()
        try:  # with TLS 1.3 the client finishes its handshake first, then sees the connection close
            talk(client_ctx, strict.getsockname()[1], "never answered").close()
        except OSError as exc:
            print(f"  client: connection dropped ({type(exc).__name__})")

        strict.close()
        strict_ctx.close()
        listener.close()
        server_ctx.close()
        client_ctx.close()


if __name__ == "__main__":
    main()
