"""The SPIFFE bundle map (gRFC A87): ``{"trust_domains": {td: <SPIFFE bundle JWKS>}}`` in one file.

gRPC's xDS clients read it from ``spiffe_trust_bundle_map_file`` and pick the
bundle of the peer's trust domain. Each trust domain's value is a SPIFFE bundle
(SPIFFE Trust Domain and Bundle §4): a JWK Set whose X.509 authorities are keys
with ``use: "x509-svid"`` and the certificate as the single ``x5c`` entry, the
public key parameters matching it. Every trust domain the agent sent is in the
map (``include_federated_domains`` does not apply); ``omit_expired`` does.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from spiffe_bridge.fileset import FileSpec
from spiffe_bridge.formats._material import Cert, spec, x509_material
from spiffe_bridge.formats.options import FormatError, X509Options
from spiffe_bridge.x509context import X509Context

_CURVES = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int, size: int | None = None) -> str:
    return _b64url(value.to_bytes(size or max(1, (value.bit_length() + 7) // 8), "big"))


def x509_jwk(cert: Cert) -> dict[str, Any]:
    """One X.509 authority as a SPIFFE bundle JWK (FormatError for a key type JWK cannot carry)."""
    certificate, der = cert
    key = certificate.public_key()
    jwk: dict[str, Any] = {"use": "x509-svid"}
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVES.get(key.curve.name)
        if curve is None:
            raise FormatError(f"bundle-map: curve {key.curve.name} has no JWK name")
        numbers, size = key.public_numbers(), curve[1]
        jwk |= {"kty": "EC", "crv": curve[0], "x": _uint(numbers.x, size), "y": _uint(numbers.y, size)}
    elif isinstance(key, rsa.RSAPublicKey):
        numbers_rsa = key.public_numbers()
        jwk |= {"kty": "RSA", "n": _uint(numbers_rsa.n), "e": _uint(numbers_rsa.e)}
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        crv = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"
        raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        jwk |= {"kty": "OKP", "crv": crv, "x": _b64url(raw)}
    else:
        raise FormatError(f"bundle-map: {type(key).__name__} authorities cannot be written as a JWK")
    jwk["x5c"] = [base64.b64encode(der).decode("ascii")]
    return jwk


def bundle_map(ctx: X509Context, options: X509Options) -> dict[str, Any]:
    """The bundle map document for every trust domain of ``ctx``, sorted by name."""
    material = x509_material(ctx, options)
    domains = sorted(material.all_bundles, key=lambda item: item[0].name)
    return {"trust_domains": {td.name: {"keys": [x509_jwk(c) for c in certs]} for td, certs in domains}}


#: X509Options fields this format reads besides COMMON_OPTIONS (an ``outputs`` entry may set only these).
OPTIONS: frozenset[str] = frozenset({"bundle_map_file_name"})


def render(ctx: X509Context, options: X509Options) -> list[FileSpec]:
    """The single bundle map file (public material: the certificate mode)."""
    data = json.dumps(bundle_map(ctx, options), indent=2, sort_keys=True).encode() + b"\n"
    return [spec(options.bundle_map_file_name, data, options.cert_file_mode)]
