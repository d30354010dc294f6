"""gRPC mTLS with SPIFFE authorization: dynamic server credentials, an interceptor, a rotating channel.

    python examples/tls/grpc_echo.py

Server: ``grpc_server_credentials`` hands gRPC the current SVID before each new
handshake; ``SpiffeServerInterceptor`` refuses RPCs from clients the
authorizer rejects (PERMISSION_DENIED, naming the client's ID).
Client: ``SpiffeChannel`` rebuilds its channel on rotation. gRPC Python cannot
show the client the server's certificate, so the client side enforces the
server's trust domain (only its bundle as roots) and gRPC's DNS-SAN hostname
check; the server's SVID therefore carries DNS SAN ``localhost``.
No .proto needed: generic handlers with raw bytes.
"""

from __future__ import annotations

from concurrent import futures

import grpc
from _agent import CLIENT_ID, workload_api

from spiffe_bridge import X509Source
from spiffe_bridge.tls import (
    SpiffeChannel,
    SpiffeServerInterceptor,
    authorize_id,
    grpc_peer_spiffe_id,
    grpc_server_credentials,
)


def say(request: bytes, context: grpc.ServicerContext) -> bytes:
    """The interceptor already verified and authorized the client; this just greets it."""
    return f"hello {grpc_peer_spiffe_id(context)}: ".encode() + request


def main() -> None:
    with workload_api() as (address, agent), X509Source(address) as source:
        interceptor = SpiffeServerInterceptor(source, authorize_id(CLIENT_ID))
        server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[interceptor])
        handlers = {"Say": grpc.unary_unary_rpc_method_handler(say)}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("demo.Echo", handlers)])
        port = server.add_secure_port("127.0.0.1:0", grpc_server_credentials(source, svid_hint="server"))
        server.start()

        with SpiffeChannel(
            f"localhost:{port}", source, server_trust_domain="example.org", svid_hint="client"
        ) as channel:
            say_rpc = channel.unary_unary("/demo.Echo/Say", None, None)  # like a generated stub's attribute
            print("  " + say_rpc(b"first call", timeout=10).decode())

            if agent is not None:
                serial = {m.hint: m.serial_number for m in agent.rotate()}["client"]
                channel.wait_for(lambda c: c.svid(hint="client").leaf.serial_number == serial)
                print(f"  rotated; channel rebuilt (generation {channel.generation})")
                print("  " + say_rpc(b"after rotation", timeout=10).decode())

            interceptor.authorizer = authorize_id("spiffe://example.org/billing")
            try:
                say_rpc(b"refused", timeout=10)
            except grpc.RpcError as err:
                print(f"  {err.code().name}: {err.details()}")
        server.stop(None)


if __name__ == "__main__":
    main()
