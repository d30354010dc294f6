"""gRPC mTLS credentials from an X.509 source: server credentials that rotate, channel credentials.

Server. ``grpc_server_credentials(source)`` uses gRPC's dynamic certificate
configuration: gRPC calls our fetcher before every new TLS handshake, and we
hand it a new configuration (SVID + all current bundles as client roots)
whenever the source's context changed. gRPC core verifies the client chain
against the union of the bundles; authorizing the client by SPIFFE ID is
:mod:`.grpc_interceptors`.

Client. ``grpc_channel_credentials`` are static (gRPC Python has no dynamic
channel credentials): our SVID, and as roots the server's trust domain's
bundle. ``SpiffeChannel`` (:mod:`.grpc_channel`) rebuilds them on rotation and
says what the client can and cannot check about the server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc

from spiffe_bridge.model import X509Context
from spiffe_bridge.sources.protocols import X509SourceLike
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain
from spiffe_bridge.tls._follow import log


def _roots_pem(context: X509Context, trust_domain: TrustDomain | str | None) -> bytes:
    """The roots to trust as PEM: one trust domain's bundle, or all bundles when None."""
    if trust_domain is None:
        return b"".join(b.pem for b in context.bundles.values())
    bundle = context.bundle_for(trust_domain)
    if bundle is None:
        raise LookupError(f"no bundle for trust domain {trust_domain}: it is not trusted by this workload")
    return bundle.pem


class _CertificateFetcher:
    """gRPC's per-handshake callback: a new configuration when the source's context changed."""

    def __init__(
        self, source: X509SourceLike, svid_hint: str | None, spiffe_id: SpiffeId | str | None
    ) -> None:
        self._source = source
        self._svid_hint = svid_hint
        self._spiffe_id = spiffe_id
        self._lock = threading.Lock()
        self._served: bytes | None = None

    def configuration(self, context: X509Context) -> grpc.ServerCertificateConfiguration:
        svid = context.svid(hint=self._svid_hint, spiffe_id=self._spiffe_id)
        return grpc.ssl_server_certificate_configuration(
            [(svid.key_pem, svid.chain_pem)], root_certificates=_roots_pem(context, None)
        )

    def initial(self) -> grpc.ServerCertificateConfiguration:
        context = self._source.context
        with self._lock:
            config = self.configuration(context)
            self._served = context.digest
        return config

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        try:
            context = self._source.context
            with self._lock:
                if context.digest == self._served:
                    return None
                config = self.configuration(context)
                self._served = context.digest
            return config
        except Exception as exc:  # never fail a handshake over it: keep the current material
            log.warning("grpc server credentials: keeping the current certificate: %s", exc)
            return None


def grpc_server_credentials(
    source: X509SourceLike,
    *,
    svid_hint: str | None = None,
    spiffe_id: SpiffeId | str | None = None,
    require_client_auth: bool = True,
) -> grpc.ServerCredentials:
    """Server credentials presenting the current SVID and requiring client certificates.

    Rotations apply to new connections without restarting the server. Pair with
    ``SpiffeServerInterceptor`` to authorize clients by SPIFFE ID.
    """
    fetcher = _CertificateFetcher(source, svid_hint, spiffe_id)
    # grpc-stubs types the fetcher without the documented ``None`` ("no change") result
    fetch: Callable[[], grpc.ServerCertificateConfiguration] = fetcher  # type: ignore[assignment]
    return grpc.dynamic_ssl_server_credentials(
        fetcher.initial(), fetch, require_client_authentication=require_client_auth
    )


def grpc_channel_credentials(
    source: X509SourceLike | X509Context,
    *,
    server_trust_domain: TrustDomain | str | None = None,
    svid_hint: str | None = None,
    spiffe_id: SpiffeId | str | None = None,
) -> grpc.ChannelCredentials:
    """Static channel credentials from the current context: our SVID, and as roots the bundle
    of ``server_trust_domain`` (all bundles when None). Use ``SpiffeChannel`` to follow rotations."""
    context = source if isinstance(source, X509Context) else source.context
    svid = context.svid(hint=svid_hint, spiffe_id=spiffe_id)
    return grpc.ssl_channel_credentials(
        root_certificates=_roots_pem(context, server_trust_domain),
        private_key=svid.key_pem,
        certificate_chain=svid.chain_pem,
    )
