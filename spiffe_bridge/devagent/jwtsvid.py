"""Minimal ES256 JWS for JWT-SVIDs: signing, JWKS rendering, and the agent's own verification.

Only what the dev agent needs (JWT-SVID.md §2-3). ``verify`` is written apart from the
library's validator (``spiffe_bridge.jwtsvid``) on purpose: the agent's ValidateJWTSVID is what
tests compare the library against, so a bug the two shared could not show.
"""

from __future__ import annotations

import base64
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

ALGORITHM = "ES256"
_COORD_BYTES = 32
_ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})


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


#: How far ``nbf``/``iat`` may lie ahead of the agent's clock.
_SKEW = 60


class TokenRejected(ValueError):
    """The dev agent's ValidateJWTSVID refuses the token; the message says why."""


def verify(
    token: str, audience: str, key_for: Callable[[str, str], ec.EllipticCurvePublicKey | None]
) -> tuple[str, dict[str, Any]]:
    """(SPIFFE ID, claims) of a valid ES256 JWT-SVID for ``audience``; TokenRejected otherwise.

    ``key_for(trust_domain, kid)`` is the agent's own key lookup (its signing keys, not a JWKS).
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRejected("not a compact JWS (three dot-separated parts)")
    try:
        header, claims = (json.loads(_unb64url(p)) for p in parts[:2])
        signature = _unb64url(parts[2])
    except ValueError as exc:
        raise TokenRejected(f"undecodable token: {exc}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenRejected("header and claims must be JSON objects")
    if header.get("alg") != ALGORITHM:
        raise TokenRejected(f"unsupported algorithm {header.get('alg')!r} (the dev agent signs {ALGORITHM})")
    if header.get("typ") not in (None, "JWT", "JOSE"):
        raise TokenRejected(f"unsupported token type {header.get('typ')!r}")
    kid, sub = header.get("kid"), claims.get("sub")
    if not isinstance(kid, str) or not kid:
        raise TokenRejected("token header has no key ID")
    if not isinstance(sub, str) or not sub.startswith("spiffe://") or "/" not in sub[len("spiffe://") :]:
        raise TokenRejected(f"subject {sub!r} is not a workload SPIFFE ID")
    trust_domain = sub[len("spiffe://") :].split("/", 1)[0]
    key = key_for(trust_domain, kid)
    if key is None:
        raise TokenRejected(f"no key {kid!r} in the bundle of {trust_domain!r}")
    if len(signature) != 2 * _COORD_BYTES:
        raise TokenRejected("signature is not 64 bytes (r || s)")
    der = encode_dss_signature(
        int.from_bytes(signature[:_COORD_BYTES], "big"), int.from_bytes(signature[_COORD_BYTES:], "big")
    )
    try:
        key.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise TokenRejected("signature does not verify") from None
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in auds:
        raise TokenRejected(f"token audience {auds!r} does not contain {audience!r}")
    now = time.time()
    exp = _number(claims, "exp")
    if exp is None or exp <= now:
        raise TokenRejected("token has expired" if exp is not None else "token has no expiry")
    for name in ("nbf", "iat"):
        when = _number(claims, name)
        if when is not None and when > now + _SKEW:
            raise TokenRejected(f"token is not valid yet ({name} is in the future)")
    return sub, claims


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value != value
        or abs(value) == float("inf")
    ):
        raise TokenRejected(f"{name!r} is not a finite number")
    return float(value)


def _unb64url(text: str) -> bytes:
    if not text or "=" in text:
        raise ValueError("empty or padded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS and JWK use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _compact_json(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
