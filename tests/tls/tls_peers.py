"""Peers for TLS tests: forged SVIDs, plain stdlib contexts, a threaded TLS echo server.

Plain contexts stand for peers that do *not* use spiffe_bridge (an intruder, a
workload of another trust domain); their files live in the test's tmp_path.
Nothing here sleeps: servers report each connection's outcome on a queue.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from _support.pki import certs_pem, issuer, key_pem
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from spiffe_bridge.devagent.ca import TrustDomainCA, X509SVIDMaterial
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.tls import peer_spiffe_id

IO_TIMEOUT = 10.0
SERVER_ID = "spiffe://example.org/server"
CLIENT_ID = "spiffe://example.org/client"


@dataclass(frozen=True)
class Material:
    """A certificate chain and key as PEM (what a plain TLS peer loads)."""

    chain_pem: bytes
    key_pem: bytes

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.chain_pem)[0]


def material(svid: X509SVIDMaterial) -> Material:
    return Material(certs_pem(svid.chain), key_pem(svid.private_key))


def forge(
    signer: TrustDomainCA,
    spiffe_id: str,
    *,
    not_after: dt.datetime | None = None,
    uris: list[str] | None = None,
) -> Material:
    """A leaf for ``spiffe_id`` signed by ``signer``'s real issuing key, whatever the ID's trust domain."""
    issuer_cert, issuer_key = issuer(signer)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = x509.KeyUsage(True, False, True, False, True, False, False, False, False)
    sans = [x509.UniformResourceIdentifier(u) for u in (uris or [spiffe_id])]
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=2))
        .not_valid_after(not_after or now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(eku, critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    return Material(certs_pem([cert, *signer.intermediates]), key_pem(key))


def plain_context(
    tmp_path: Path, *, server_side: bool, mat: Material | None, trust_pem: bytes
) -> ssl.SSLContext:
    """A stdlib context that is not SPIFFE-aware: presents ``mat`` (if any), trusts ``trust_pem``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    if mat is not None:
        directory = tmp_path / f"peer-{os.urandom(4).hex()}"
        directory.mkdir(mode=0o700)
        (directory / "chain.pem").write_bytes(mat.chain_pem)
        (directory / "key.pem").write_bytes(mat.key_pem)
        ctx.load_cert_chain(directory / "chain.pem", directory / "key.pem")
    ctx.load_verify_locations(cadata=trust_pem.decode())
    return ctx


def serial_of(der: bytes | None) -> int:
    assert der, "no peer certificate"
    return x509.load_der_x509_certificate(der).serial_number


@dataclass
class Outcome:
    """What the server saw for one connection: the authorized peer, or why the handshake failed."""

    peer_id: SpiffeId | None = None
    peer_serial: int | None = None
    error: BaseException | None = None


class TLSServer:
    """Threaded TLS echo server on 127.0.0.1; one outcome per accepted connection.

    Replies ``<peer id>|<data>`` so a client learns how the server saw it.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.outcomes: queue.Queue[Outcome] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(IO_TIMEOUT)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except Exception as exc:
            conn.close()
            self.outcomes.put(Outcome(error=exc))
            return
        with tls:
            try:
                peer: SpiffeId | None = peer_spiffe_id(tls)
            except LookupError:
                peer = None
            self.outcomes.put(Outcome(peer, serial_of(tls.getpeercert(True))))
            try:
                while data := tls.recv(4096):
                    tls.sendall(str(peer).encode() + b"|" + data)
            except OSError:
                pass

    def next(self) -> Outcome:
        return self.outcomes.get(timeout=IO_TIMEOUT)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        self._listener.close()
        self._accepting.join(IO_TIMEOUT)
        for thread in self._threads:
            thread.join(IO_TIMEOUT)

    def __enter__(self) -> TLSServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(context: ssl.SSLContext, port: int, **kwargs: object) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1:port (handshake done, authorization included)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    try:
        return context.wrap_socket(sock, server_hostname="localhost", **kwargs)  # type: ignore[arg-type]
    except BaseException:
        sock.close()
        raise


def exchange(tls: ssl.SSLSocket, data: bytes = b"ping") -> bytes:
    tls.sendall(data)
    return tls.recv(4096)


def refused_by_server(tls: ssl.SSLSocket) -> bool:
    """True when the server dropped the connection after the (TLS 1.3, client-side) handshake."""
    try:
        return exchange(tls) == b""
    except OSError:
        return True
