"""Minimal ES256 JWS for JWT-SVIDs: signing, verification and JWKS rendering.

Only what the dev agent needs (JWT-SVID.md §2-4): compact serialisation, the
``alg``/``kid``/``typ`` headers and the ``sub``/``aud``/``exp`` checks. Written
against ``cryptography`` so the package needs no JWT library.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .identity import split_spiffe_id

ALGORITHM = "ES256"
_COORD_BYTES = 32
_ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})


class JWTValidationError(ValueError):
    """The token is malformed, badly signed, expired or not for this audience."""


@dataclass(frozen=True)
class JWTAuthority:
    """A JWT signing key of a trust domain, published in its JWKS under ``kid``."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> JWTAuthority:
        """New P-256 key with a random 32-character key ID (like SPIRE's)."""
        return cls(secrets.token_urlsafe(24), ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The verification key."""
        return self.private_key.public_key()

    def jwk(self) -> dict[str, str]:
        """Public JWK as SPIFFE bundles carry it (``use`` = ``jwt-svid``)."""
        numbers = self.public_key.public_numbers()
        return {
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(_COORD_BYTES, "big")),
            "y": b64url(numbers.y.to_bytes(_COORD_BYTES, "big")),
            "use": "jwt-svid",
        }

    def sign(self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> str:
        """Sign arbitrary claims; ``headers`` override the defaults (tests forge bad tokens)."""
        header: dict[str, Any] = {"alg": ALGORITHM, "kid": self.kid, "typ": "JWT"}
        header.update(headers or {})
        signing_input = f"{b64url(_compact_json(header))}.{b64url(_compact_json(claims))}"
        der = self.private_key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(_COORD_BYTES, "big") + s.to_bytes(_COORD_BYTES, "big")
        return f"{signing_input}.{b64url(raw)}"


def jwt_svid_claims(spiffe_id: str, audience: list[str], ttl: float) -> dict[str, Any]:
    """Claims of a JWT-SVID; a single audience is a string, like SPIRE emits it."""
    now = int(time.time())
    aud: str | list[str] = audience[0] if len(audience) == 1 else list(audience)
    return {"sub": spiffe_id, "aud": aud, "exp": now + max(1, int(ttl)), "iat": now}


def jwks_json(authorities: list[JWTAuthority]) -> bytes:
    """JWKS document for a trust domain's JWT bundle."""
    return _compact_json({"keys": [a.jwk() for a in authorities]})


KeyLookup = Callable[[str, str], ec.EllipticCurvePublicKey | None]


def validate(token: str, audience: str, lookup: KeyLookup) -> tuple[str, dict[str, Any]]:
    """Verify a JWT-SVID and return (SPIFFE ID, claims).

    ``lookup(trust_domain, kid)`` returns the key for the subject's trust
    domain, so a token is only ever checked against its own domain's bundle.
    """
    header, claims, signing_input, signature = _split(token)
    extra = set(header) - _ALLOWED_HEADERS
    if extra:
        raise JWTValidationError(f"unexpected JWT headers {sorted(extra)}")
    if header.get("alg") != ALGORITHM:
        raise JWTValidationError(f"unsupported token algorithm {header.get('alg')!r}")
    if header.get("typ") not in (None, "JWT", "JOSE"):
        raise JWTValidationError(f"invalid token type {header.get('typ')!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise JWTValidationError("token has no key ID")
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise JWTValidationError("token has no subject")
    try:
        trust_domain, path = split_spiffe_id(sub)
    except ValueError as err:
        raise JWTValidationError(f"token subject is not a SPIFFE ID: {err}") from None
    if not path:
        raise JWTValidationError("token subject has no path")
    key = lookup(trust_domain, kid)
    if key is None:
        raise JWTValidationError(f"no key {kid!r} for trust domain {trust_domain!r}")
    if len(signature) != 2 * _COORD_BYTES:
        raise JWTValidationError("token signature has the wrong length")
    r = int.from_bytes(signature[:_COORD_BYTES], "big")
    s = int.from_bytes(signature[_COORD_BYTES:], "big")
    try:
        key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise JWTValidationError("token signature is invalid") from None
    _check_claims(claims, audience)
    return sub, claims


def _check_claims(claims: Mapping[str, Any], audience: str) -> None:
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud
    if not isinstance(auds, list) or audience not in auds:
        raise JWTValidationError(f"expected audience {audience!r}, token has {aud!r}")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise JWTValidationError("token has no expiry")
    if exp <= time.time():
        raise JWTValidationError("token has expired")


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    parts = token.split(".")
    if len(parts) != 3:
        raise JWTValidationError("token is not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    except (ValueError, binascii.Error) as err:
        raise JWTValidationError(f"token is malformed: {err}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JWTValidationError("token header and claims must be JSON objects")
    return header, claims, signing_input, signature


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS and JWK use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _compact_json(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
