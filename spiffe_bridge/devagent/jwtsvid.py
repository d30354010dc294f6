"""Minimal ES256 JWS for JWT-SVIDs: signing and JWKS rendering.

Only what the dev agent needs to mint tokens (JWT-SVID.md §2-3). Verification
is the library's own (``spiffe_bridge.jwt``), so the agent's ValidateJWTSVID
and local validation apply the very same rules.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
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


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS and JWK use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _compact_json(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
