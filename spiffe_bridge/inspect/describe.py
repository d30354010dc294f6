"""Plain-dict descriptions of SPIFFE material, never including key material.

The keys are fixed by issue #19 so scripts can rely on them: ``svids`` (a list of
``spiffe_id, hint, serial, not_before, not_after, key_type, key_size, dns_names,
chain``), ``bundles`` (trust domain -> list of ``subject, not_before, not_after``)
and ``jwt_bundles`` (trust domain -> list of ``key_id, key_type, algorithms``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.x509bundle import X509Bundle
from spiffe_bridge.x509context import X509Context

#: JWS algorithms a JWK of this family/curve can verify (JWT-SVID.md allows these).
_EC_ALGS = {"P-256": ["ES256"], "P-384": ["ES384"], "P-521": ["ES512"]}
_RSA_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def iso(when: dt.datetime) -> str:
    """RFC 3339 UTC timestamp with a ``Z`` suffix."""
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def key_type(key: PublicKeyTypes) -> tuple[str, int]:
    """``("EC P-256", 256)``, ``("RSA", 2048)``, ... for a public key."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {_CURVE_NAMES.get(key.curve.name, key.curve.name)}", key.curve.key_size
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    return type(key).__name__, 0


def subject(cert: x509.Certificate) -> str:
    """The subject as an RFC 4514 string (``-`` when empty, as SPIRE's leaves often are)."""
    return cert.subject.rfc4514_string() or "-"


def uri_sans(cert: x509.Certificate) -> list[str]:
    """The certificate's URI SANs (empty when it has no subjectAltName)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def dns_sans(cert: x509.Certificate) -> list[str]:
    """The certificate's DNS SANs."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.DNSName))


def describe_cert(cert: x509.Certificate) -> dict[str, Any]:
    """``subject``, ``not_before``, ``not_after`` of one certificate."""
    return {
        "subject": subject(cert),
        "not_before": iso(cert.not_valid_before_utc),
        "not_after": iso(cert.not_valid_after_utc),
    }


def describe_chain(
    chain: Sequence[x509.Certificate], spiffe_id: str | None = None, hint: str = ""
) -> dict[str, Any]:
    """One ``svids`` entry for a leaf-first chain; the SPIFFE ID defaults to the leaf's URI SAN."""
    leaf = chain[0]
    if spiffe_id is None:
        uris = uri_sans(leaf)
        spiffe_id = uris[0] if len(uris) == 1 else ""
    kind, size = key_type(leaf.public_key())
    return {
        "spiffe_id": spiffe_id,
        "hint": hint,
        "serial": format(leaf.serial_number, "x"),
        "not_before": iso(leaf.not_valid_before_utc),
        "not_after": iso(leaf.not_valid_after_utc),
        "key_type": kind,
        "key_size": size,
        "dns_names": dns_sans(leaf),
        "chain": [subject(c) for c in chain],
    }


def describe_bundle(certs: Iterable[x509.Certificate]) -> list[dict[str, Any]]:
    """One ``bundles`` value: each authority's subject and validity."""
    return [describe_cert(c) for c in certs]


def describe_jwks(jwks: bytes) -> list[dict[str, Any]]:
    """Key IDs, key types and the algorithms each key can verify, from a JWKS document."""
    try:
        doc = json.loads(jwks)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    keys = doc.get("keys", []) if isinstance(doc, dict) else []
    out: list[dict[str, Any]] = []
    for jwk in keys if isinstance(keys, list) else []:
        if not isinstance(jwk, dict):
            continue
        kty, crv = jwk.get("kty"), jwk.get("crv")
        if isinstance(jwk.get("alg"), str):
            algs = [jwk["alg"]]
        elif kty == "EC":
            algs = list(_EC_ALGS.get(str(crv), []))
        elif kty == "RSA":
            algs = list(_RSA_ALGS)
        else:
            algs = []
        out.append(
            {
                "key_id": jwk.get("kid", ""),
                "key_type": f"EC {crv}" if kty == "EC" else str(kty),
                "algorithms": algs,
            }
        )
    return out


def describe_jwt_bundles(bundles: JwtBundleSet | None) -> dict[str, list[dict[str, Any]]]:
    """The ``jwt_bundles`` value: trust domain -> keys."""
    if bundles is None:
        return {}
    return {
        td.name: describe_jwks(b.jwks) for td, b in sorted(bundles.bundles.items(), key=lambda i: i[0].name)
    }


def describe_x509_bundles(bundles: Mapping[Any, X509Bundle]) -> dict[str, list[dict[str, Any]]]:
    """The ``bundles`` value from validated bundles."""
    return {b.trust_domain.name: describe_bundle(b.authorities) for b in bundles.values()}


def describe_context(ctx: X509Context, jwt_bundles: JwtBundleSet | None = None) -> dict[str, Any]:
    """What the agent serves: ``svids``, ``bundles``, ``federated`` and ``jwt_bundles``."""
    return {
        "svids": [describe_chain(s.cert_chain, str(s.spiffe_id), s.hint) for s in ctx.svids],
        "bundles": describe_x509_bundles(ctx.bundles),
        "federated": sorted(td.name for td in ctx.federated),
        "jwt_bundles": describe_jwt_bundles(jwt_bundles),
    }


def describe_jwt_svid(svid: JwtSvid, header: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A JWT-SVID's subject, audience, validity and signing key ID (never the token itself)."""
    out: dict[str, Any] = {
        "spiffe_id": str(svid.spiffe_id),
        "audience": list(svid.audience),
        "expires_at": iso(dt.datetime.fromtimestamp(svid.expiry, dt.UTC)),
    }
    if svid.issued_at is not None:
        out["issued_at"] = iso(dt.datetime.fromtimestamp(svid.issued_at, dt.UTC))
    if header is not None:
        out["key_id"] = header.get("kid", "")
        out["algorithm"] = header.get("alg", "")
    return out
