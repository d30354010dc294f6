"""Hand-built Workload API messages for core tests, from the dev agent's CA."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.devagent.ca import TrustDomainCA


def svid_message(ca: TrustDomainCA, spiffe_id: str = "spiffe://example.org/web", hint: str = "") -> Any:
    mat = ca.issue_x509_svid(spiffe_id, ttl=3600, hint=hint)
    return pb.X509SVID(
        spiffe_id=spiffe_id,
        x509_svid=mat.chain_der(),
        x509_svid_key=mat.key_der(),
        bundle=ca.bundle_der(),
        hint=hint,
    )


def forge_leaf(
    ca: TrustDomainCA,
    *,
    uris: list[str],
    ca_flag: bool = False,
    key_cert_sign: bool = False,
    digital_signature: bool = True,
    not_after: dt.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf signed by the real CA key but with chosen (possibly bad) properties."""
    issuer = ca._current_issuer()
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = x509.KeyUsage(digital_signature, False, False, False, False, key_cert_sign, False, False, False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]), True)
        .sign(issuer.key, hashes.SHA256())
    )
    return cert, key
