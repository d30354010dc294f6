"""mTLS echo client that only talks to a server it authorizes by SPIFFE ID.

    SPIFFE_ENDPOINT_SOCKET=unix:///tmp/agent.sock python examples/tls/echo_client.py \
        --connect 127.0.0.1:8443 --expect spiffe://example.org/server hello
"""

from __future__ import annotations

import argparse
import socket

from cryptography import x509

from spiffe_bridge import X509Source
from spiffe_bridge.tls import PeerRefusedError, authorize_id, client_ssl_context, peer_spiffe_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", default="127.0.0.1:8443")
    parser.add_argument("--expect", required=True, metavar="SPIFFE_ID", help="the server's SPIFFE ID")
    parser.add_argument("--hint", default=None, help="which of our SVIDs to present (default: the first)")
    parser.add_argument("message", nargs="?", default="hello")
    args = parser.parse_args()

    host, _, port = args.connect.rpartition(":")
    with (
        X509Source() as source,
        client_ssl_context(source, authorize_id(args.expect), svid_hint=args.hint) as ctx,
    ):
        raw = socket.create_connection((host, int(port)), timeout=10)
        try:
            tls = ctx.wrap_socket(raw, server_hostname=host)
        except PeerRefusedError as exc:
            raise SystemExit(f"refused the server: {exc}") from None
        with tls:
            serial = x509.load_der_x509_certificate(tls.getpeercert(True) or b"").serial_number
            print(f"connected to {peer_spiffe_id(tls)} (certificate serial {serial:x})")
            tls.sendall(args.message.encode() + b"\n")
            reply = tls.recv(4096).decode().rstrip()
            # TLS 1.3: a server refusing *us* can only close the connection after the handshake
            print(reply or "the server closed the connection (did it authorize our SPIFFE ID?)")


if __name__ == "__main__":
    main()
