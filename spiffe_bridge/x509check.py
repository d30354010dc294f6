"""The X.509-SVID rules, memoised by DER: leaf and CA constraints, validity windows, chain signatures.

Parsed certificates and signature checks are remembered by their exact DER
bytes: a rotation changes only the leaf, so roots, intermediates and federated
bundles are parsed and verified once, not on every update. Bounded, so hostile
input cannot grow memory. ``x509svid`` and ``x509bundle`` build SVIDs and bundles on these checks;
``tls`` and ``inspect`` apply them to peers' and files' certificates.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from spiffe_bridge._der import split_der
from spiffe_bridge.errors import ValidationError
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain

#: Tolerated clock skew for a certificate's notBefore.
CLOCK_SKEW = dt.timedelta(seconds=60)

#: What cryptography raises for certificates and keys it cannot parse or does not support.
PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    x509.InvalidVersion,
)

#: Entries per cache (parsed certificates, signature checks, validated SVIDs, bundles).
CACHE_SIZE = 1024


class Roots(Protocol):
    """What chain verification needs of a bundle (``x509bundle.X509Bundle``)."""

    @property
    def trust_domain(self) -> TrustDomain: ...

    @property
    def authorities_der(self) -> tuple[bytes, ...]: ...


@functools.lru_cache(maxsize=CACHE_SIZE)
def parsed(der: bytes) -> tuple[x509.Certificate, CertificatePublicKeyTypes, dict[type, Any]]:
    """A certificate with its public key and extension values by type, parsed once.

    Extensions and the key are parsed lazily by cryptography: surface their errors
    here, so the checks never meet a half-parsable certificate. Names are compared
    inside the signature check and not needed as Python objects.
    """
    cert = x509.load_der_x509_certificate(der)
    extensions = {type(ext.value): ext.value for ext in cert.extensions}
    return cert, cert.public_key(), extensions


def load_certs(blob: bytes, what: str) -> tuple[tuple[x509.Certificate, ...], tuple[bytes, ...]]:
    """Split concatenated DER certificates and parse each (ValidationError names the bad one)."""
    ders = split_der(blob, what)
    certs = []
    for i, der in enumerate(ders):
        try:
            certs.append(parsed(der)[0])
        except PARSE_ERRORS as exc:
            raise ValidationError(f"{what}: certificate {i} is not valid DER: {exc}") from None
    return tuple(certs), tuple(ders)


def _extensions(cert: x509.Certificate) -> dict[type, Any]:
    return parsed(cert.public_bytes(serialization.Encoding.DER))[2]


def is_ca(cert: x509.Certificate, extensions: dict[type, Any] | None = None) -> bool:
    """True for a signing certificate: basicConstraints cA=true and, if keyUsage is present, keyCertSign."""
    ext = extensions if extensions is not None else _extensions(cert)
    bc = ext.get(x509.BasicConstraints)
    if bc is None or not bc.ca:
        return False
    ku = ext.get(x509.KeyUsage)
    return ku is None or bool(ku.key_cert_sign)


def check_leaf(sid: SpiffeId, leaf: x509.Certificate, extensions: dict[type, Any] | None = None) -> None:
    """X509-SVID leaf rules: one URI SAN equal to ``sid``, not a CA, digitalSignature, no cert/CRL signing."""
    try:
        ext = extensions if extensions is not None else _extensions(leaf)
    except PARSE_ERRORS as exc:
        raise ValidationError(f"SVID {sid}: leaf extensions are malformed: {exc}") from None
    san = ext.get(x509.SubjectAlternativeName)
    if san is None:
        raise ValidationError(f"SVID {sid}: leaf has no subjectAltName")
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise ValidationError(f"SVID {sid}: leaf must have exactly one URI SAN, found {len(uris)}")
    if uris[0] != str(sid):
        raise ValidationError(f"SVID {sid}: leaf URI SAN {uris[0]!r} differs from the SPIFFE ID")
    bc = ext.get(x509.BasicConstraints)
    if bc is not None and bc.ca:
        raise ValidationError(f"SVID {sid}: leaf is a CA certificate")
    ku = ext.get(x509.KeyUsage)
    if ku is None:
        raise ValidationError(f"SVID {sid}: leaf has no keyUsage (digitalSignature required)")
    if not ku.digital_signature:
        raise ValidationError(f"SVID {sid}: leaf keyUsage lacks digitalSignature")
    if ku.key_cert_sign or ku.crl_sign:
        raise ValidationError(f"SVID {sid}: leaf keyUsage must not allow keyCertSign or cRLSign")


def check_times(sid: SpiffeId, chain: Iterable[x509.Certificate], now: dt.datetime) -> None:
    """Every certificate is inside its validity window (notBefore with ``CLOCK_SKEW`` tolerance)."""
    for i, cert in enumerate(chain):
        if cert.not_valid_after_utc <= now:
            raise ValidationError(
                f"SVID {sid}: certificate {i} expired at {cert.not_valid_after_utc.isoformat()}"
            )
        if cert.not_valid_before_utc > now + CLOCK_SKEW:
            raise ValidationError(
                f"SVID {sid}: certificate {i} not valid before {cert.not_valid_before_utc.isoformat()}"
            )


@functools.lru_cache(maxsize=CACHE_SIZE)
def issued_by(cert_der: bytes, issuer_der: bytes) -> bool:
    """Whether ``issuer_der`` signed ``cert_der`` (names compared too); memoised by both DERs."""
    try:
        cert, issuer = parsed(cert_der)[0], parsed(issuer_der)[0]
        # Checks the issuer name against the issuer's subject too (ValueError if they differ).
        cert.verify_directly_issued_by(issuer)
    except (*PARSE_ERRORS, InvalidSignature):
        return False
    return True


def verify_chain(
    sid: SpiffeId,
    chain: tuple[x509.Certificate, ...],
    bundle: Roots,
    chain_der: tuple[bytes, ...] | None = None,
) -> None:
    """Each certificate is signed by the next, and the last by an authority of ``bundle``.

    ``chain_der``: the chain's DER when the caller has it (saves re-encoding each certificate).
    """
    ders = chain_der or tuple(c.public_bytes(serialization.Encoding.DER) for c in chain)
    for i in range(len(ders) - 1):
        if not issued_by(ders[i], ders[i + 1]):
            raise ValidationError(f"SVID {sid}: certificate {i} is not signed by certificate {i + 1}")
    last = ders[-1]
    if any(issued_by(last, root) for root in bundle.authorities_der):
        return
    raise ValidationError(f"SVID {sid}: chain does not verify against the bundle of {bundle.trust_domain}")
