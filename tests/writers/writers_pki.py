"""Test material for the writers: real dev-agent CAs, run through production validation.

Every X509Context here comes from an ``X509SVIDResponse`` passed through
``decode_x509_context``, so writers only ever see material that the
sidecar itself would accept.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _support.ci import require_binary
from _support.pki import TTL, certs_pem, key_pem, message, self_signed_ca
from _support.wait import wait_until
from cryptography import x509

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.client import decode_x509_context
from spiffe_bridge.devagent.ca import TrustDomainCA, X509SVIDMaterial, der_concat
from spiffe_bridge.x509context import X509Context


def expired_root(name: str = "expired root") -> x509.Certificate:
    """A self-signed CA certificate whose validity ended yesterday."""
    now = dt.datetime.now(dt.UTC)
    return self_signed_ca(name, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))


@dataclass
class Pki:
    """An own trust domain CA plus optional federated CAs, issuing contexts on demand."""

    ca: TrustDomainCA
    federated: Sequence[TrustDomainCA] = ()
    extra_roots: Sequence[x509.Certificate] = ()
    issued: list[X509SVIDMaterial] = field(default_factory=list)

    def bundle_der(self) -> bytes:
        return self.ca.bundle_der() + der_concat(self.extra_roots)

    def svid_message(self, spiffe_id: str, hint: str = "", dns: Sequence[str] = ()) -> Any:
        mat = self.ca.issue_x509_svid(spiffe_id, ttl=TTL, hint=hint, dns_names=dns)
        self.issued.append(mat)
        return message(mat, self.bundle_der())

    def response(self, *ids: str, hints: Sequence[str] = (), dns: Sequence[str] = ("localhost",)) -> Any:
        ids = ids or (f"spiffe://{self.ca.trust_domain}/workload",)
        hints = list(hints) or ["" for _ in ids]
        return pb.X509SVIDResponse(
            svids=[self.svid_message(i, h, dns) for i, h in zip(ids, hints, strict=True)],
            federated_bundles={f.id: f.bundle_der() for f in self.federated},
        )

    def context(
        self, *ids: str, hints: Sequence[str] = (), dns: Sequence[str] = ("localhost",)
    ) -> X509Context:
        return decode_x509_context(self.response(*ids, hints=hints, dns=dns))

    def client_files(self, directory: Path, spiffe_id: str | None = None) -> tuple[Path, Path]:
        """Write a fresh client SVID (chain + key PEM) from the same CA; return (cert, key) paths."""
        sid = spiffe_id or f"spiffe://{self.ca.trust_domain}/client"
        mat = self.ca.issue_x509_svid(sid, ttl=TTL)
        directory.mkdir(parents=True, exist_ok=True)
        cert = directory / "client.pem"
        key = directory / "client_key.pem"
        cert.write_bytes(certs_pem(mat.chain))
        key.write_bytes(key_pem(mat.private_key))
        return cert, key


def openssl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the openssl CLI, capturing text output."""
    return subprocess.run([require_binary("openssl"), *args], capture_output=True, text=True, check=check)


def client_context(cafile: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A TLS client that verifies the server against ``cafile`` (hostname ``localhost``)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


def https_get(port: int, ctx: ssl.SSLContext, path: str = "/") -> tuple[bytes, bytes]:
    """One HTTP/1.0 GET over TLS to 127.0.0.1; returns (response bytes, server leaf DER)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        leaf = tls.getpeercert(binary_form=True) or b""
        tls.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks), leaf


def free_port() -> int:
    """An unused loopback TCP port (bound and released; good enough for tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Block until something accepts on ``port``; fail early if ``proc`` exits."""

    def accepts() -> bool:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(f"{proc.args!r} exited with {proc.returncode}: {out}")
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True

    wait_until(accepts, f"something to listen on port {port}", timeout, ignore=(OSError,))
