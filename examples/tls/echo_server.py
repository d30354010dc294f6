"""mTLS echo server that only talks to clients it authorizes by SPIFFE ID.

    SPIFFE_ENDPOINT_SOCKET=unix:///tmp/agent.sock python examples/tls/echo_server.py \
        --allow spiffe://example.org/client

Each connection's handshake runs in its own thread; the context is created
once and keeps presenting the current SVID across rotations.
"""

from __future__ import annotations

import argparse
import logging
import socket
import threading

from spiffe_bridge import X509Source
from spiffe_bridge.tls import (
    Authorizer,
    PeerRefusedError,
    SpiffeSSLContext,
    authorize_any,
    authorize_member_of,
    authorize_one_of,
    peer_spiffe_id,
    server_ssl_context,
)

log = logging.getLogger("echo-server")


def serve_connection(context: SpiffeSSLContext, conn: socket.socket, address: object) -> None:
    """Handshake (with authorization), then echo lines back prefixed with the peer's ID."""
    try:
        with context.wrap_socket(conn, server_side=True) as tls:
            peer = peer_spiffe_id(tls)
            log.info("%s authorized as %s", address, peer)
            with tls.makefile("rwb") as stream:
                for line in stream:
                    stream.write(f"{peer} said: ".encode() + line)
                    stream.flush()
    except PeerRefusedError as exc:
        log.warning("%s refused: %s", address, exc)
    except OSError as exc:
        log.warning("%s: %s", address, exc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8443")
    parser.add_argument("--allow", action="append", default=[], metavar="SPIFFE_ID")
    parser.add_argument("--allow-trust-domain", action="append", default=[], metavar="TD")
    parser.add_argument("--hint", default=None, help="which of our SVIDs to present (default: the first)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    authorizer: Authorizer
    if args.allow:
        authorizer = authorize_one_of(*args.allow)
    elif args.allow_trust_domain:
        authorizer = authorize_member_of(*args.allow_trust_domain)
    else:
        authorizer = authorize_any()
    host, _, port = args.listen.rpartition(":")
    with X509Source() as source, server_ssl_context(source, authorizer, svid_hint=args.hint) as context:
        listener = socket.create_server((host, int(port)))
        log.info("listening on %s as %s, allowing %r", args.listen, context.svid.spiffe_id, authorizer)
        while True:
            conn, address = listener.accept()
            threading.Thread(target=serve_connection, args=(context, conn, address), daemon=True).start()


if __name__ == "__main__":
    main()
