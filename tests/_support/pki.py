"""Test PKI over the dev agent's ``TrustDomainCA``: Workload API messages and PEM/DER of its material.

Every well-formed certificate a test needs comes from ``TrustDomainCA`` (which follows
X509-SVID.md). What a CA deliberately cannot issue (an expired root, a CRL, a leaf
with hostile traits) is built here or in the test from ``issuer()``, the CA's real
issuing certificate and key, so forged material still chains to a real bundle.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.devagent import TrustDomainCA, X509SvidMaterial
from spiffe_bridge.devagent.ca import PrivateKey

#: SVID lifetime in seconds unless a test asks otherwise: far longer than any test runs.
TTL = 3600.0


def issuer(ca: TrustDomainCA) -> tuple[x509.Certificate, PrivateKey]:
    """The certificate and key that sign ``ca``'s SVIDs now (its intermediate when it has one)."""
    signer = ca._current_issuer()
    return signer.cert, signer.key


def message(mat: X509SvidMaterial, bundle: bytes) -> Any:
    """The ``X509SVID`` message for issued material, with ``bundle`` (concatenated DER roots)."""
    return pb.X509SVID(
        spiffe_id=mat.spiffe_id,
        x509_svid=mat.chain_der(),
        x509_svid_key=mat.key_der(),
        bundle=bundle,
        hint=mat.hint,
    )


def svid_message(
    ca: TrustDomainCA,
    spiffe_id: str | None = None,
    hint: str = "",
    *,
    ttl: float = TTL,
    dns: Iterable[str] = (),
) -> Any:
    """A fresh ``X509SVID`` message from ``ca`` (default ID ``<trust domain>/web``) with its bundle."""
    mat = ca.issue_x509_svid(spiffe_id or f"{ca.id}/web", ttl=ttl, hint=hint, dns_names=dns)
    return message(mat, ca.bundle_der())


def x509_response(
    ca: TrustDomainCA,
    *ids: str,
    hints: Sequence[str] = (),
    dns: Iterable[str] = (),
    federated: Iterable[TrustDomainCA] = (),
    **fields: Any,
) -> Any:
    """An ``X509SVIDResponse`` with one SVID per ID (hint ``h<n>`` unless given) and federated bundles."""
    ids = ids or (f"{ca.id}/web",)
    names = list(hints) or [f"h{n}" for n in range(len(ids))]
    dns = tuple(dns)
    return pb.X509SVIDResponse(
        svids=[svid_message(ca, i, h, dns=dns) for i, h in zip(ids, names, strict=True)],
        federated_bundles={f.id: f.bundle_der() for f in federated},
        **fields,
    )


def self_signed_ca(name: str, *, not_before: dt.datetime, not_after: dt.datetime) -> x509.Certificate:
    """A bare self-signed CA certificate with the given validity (e.g. an already expired root)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def crl(ca: TrustDomainCA, revoked: Mapping[int, dt.datetime] | None = None) -> bytes:
    """A DER CRL from ``ca``'s issuer, valid for a day, revoking the given serials."""
    cert, key = issuer(ca)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
    )
    for serial, when in (revoked or {}).items():
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def der(cert: x509.Certificate) -> bytes:
    """One certificate as DER."""
    return cert.public_bytes(serialization.Encoding.DER)


def key_der(key: Any) -> bytes:
    """A private key as unencrypted PKCS#8 DER (the Workload API's ``x509_svid_key``)."""
    data: bytes = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return data


def key_pem(key: Any) -> bytes:
    """A private key as unencrypted PKCS#8 PEM."""
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return data


def certs_pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Certificates as concatenated PEM blocks, in order (a chain leaf first, or a bundle)."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def roots_pem(*cas: TrustDomainCA) -> bytes:
    """The X.509 bundles of ``cas`` as one PEM trust file."""
    return certs_pem(root for ca in cas for root in ca.roots)
