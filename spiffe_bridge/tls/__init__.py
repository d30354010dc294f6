"""mTLS with SPIFFE identities: stdlib ``ssl`` contexts, gRPC credentials, authorizers.

Everything follows an ``X509Source``/``AsyncX509Source``: new connections
present the current SVID and trust the current bundles with no rebuild by the
user. Peers are authorized by SPIFFE ID after their chain has been verified
against the bundle of their own trust domain. See docs/tls.md.

Names load lazily so that ``import spiffe_bridge.tls`` does not import gRPC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spiffe_bridge._lazy import lazy_exports

__all__ = [
    "AioSpiffeServerInterceptor",
    "Authorizer",
    "PeerNotAuthorizedError",
    "PeerRefusedError",
    "SpiffeChannel",
    "SpiffeSSLContext",
    "SpiffeServerInterceptor",
    "authorize_any",
    "authorize_id",
    "authorize_if",
    "authorize_member_of",
    "authorize_one_of",
    "client_ssl_context",
    "grpc_channel_credentials",
    "grpc_peer_spiffe_id",
    "grpc_server_credentials",
    "peer_spiffe_id",
    "server_ssl_context",
    "verify_peer",
]

if TYPE_CHECKING:
    from spiffe_bridge.tls._peer import verify_peer
    from spiffe_bridge.tls.authorize import (
        Authorizer,
        PeerNotAuthorizedError,
        PeerRefusedError,
        authorize_any,
        authorize_id,
        authorize_if,
        authorize_member_of,
        authorize_one_of,
    )
    from spiffe_bridge.tls.grpc_channel import SpiffeChannel
    from spiffe_bridge.tls.grpc_credentials import grpc_channel_credentials, grpc_server_credentials
    from spiffe_bridge.tls.grpc_interceptors import (
        AioSpiffeServerInterceptor,
        SpiffeServerInterceptor,
        grpc_peer_spiffe_id,
    )
    from spiffe_bridge.tls.ssl_connection import peer_spiffe_id
    from spiffe_bridge.tls.ssl_context import SpiffeSSLContext, client_ssl_context, server_ssl_context
else:
    __getattr__, __dir__ = lazy_exports(
        globals(),
        {
            ".authorize": [
                "Authorizer",
                "PeerRefusedError",
                "PeerNotAuthorizedError",
                "authorize_any",
                "authorize_id",
                "authorize_one_of",
                "authorize_member_of",
                "authorize_if",
            ],
            "._peer": ["verify_peer"],
            ".ssl_context": [
                "SpiffeSSLContext",
                "server_ssl_context",
                "client_ssl_context",
            ],
            ".ssl_connection": ["peer_spiffe_id"],
            ".grpc_credentials": ["grpc_server_credentials", "grpc_channel_credentials"],
            ".grpc_interceptors": [
                "SpiffeServerInterceptor",
                "AioSpiffeServerInterceptor",
                "grpc_peer_spiffe_id",
            ],
            ".grpc_channel": ["SpiffeChannel"],
        },
    )
