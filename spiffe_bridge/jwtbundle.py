"""JWT bundles: the public keys (a JWK Set) of one trust domain, and the set one FetchJWTBundles gives.

Keys are parsed once per bundle; a bundle also remembers which tokens' signatures
verified against it, so ``validate_jwt_svid`` checks a signature once per bundle.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from spiffe_bridge._encoding import b64url_decode
from spiffe_bridge.errors import ValidationError
from spiffe_bridge.jwtsvid import JwtSvid, validate_jwt_svid
from spiffe_bridge.spiffeid import TrustDomain

__all__ = ["JwtBundle", "JwtBundleSet", "PublicKey"]

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
#: Tokens remembered per bundle as verified (bounded, so hostile tokens cannot grow memory).
_VERIFIED_CACHE_SIZE = 4096


def _b64_int(value: Any) -> int:
    return int.from_bytes(b64url_decode(value), "big")


def _parse_jwk(jwk: Mapping[str, Any]) -> PublicKey | None:
    kty = jwk.get("kty")
    if kty == "EC":
        curve = _CURVES.get(str(jwk.get("crv")))
        if curve is None:
            return None
        return ec.EllipticCurvePublicNumbers(_b64_int(jwk["x"]), _b64_int(jwk["y"]), curve).public_key()
    if kty == "RSA":
        return rsa.RSAPublicNumbers(_b64_int(jwk["e"]), _b64_int(jwk["n"])).public_key()
    return None


@dataclass(frozen=True, eq=False)
class JwtBundle:
    """The JWT authorities (public keys by ``kid``) of one trust domain, plus the raw JWKS."""

    trust_domain: TrustDomain
    keys: Mapping[str, PublicKey]
    jwks: bytes
    _verified: OrderedDict[str, bool] = field(default_factory=OrderedDict, repr=False)

    @classmethod
    def parse(cls, trust_domain: TrustDomain, jwks: bytes) -> JwtBundle:
        """Parse a JWKS document; keys without ``kid``, of unknown type or other ``use`` are skipped."""
        try:
            doc = json.loads(jwks)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
            raise ValidationError(f"JWT bundle for {trust_domain} is not valid JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys", []), list):
            raise ValidationError(f"JWT bundle for {trust_domain} is not a JWK Set")
        keys: dict[str, PublicKey] = {}
        for i, jwk in enumerate(doc.get("keys", [])):
            if not isinstance(jwk, dict):
                raise ValidationError(f"JWT bundle for {trust_domain}: key {i} is not an object")
            use = jwk.get("use", "jwt-svid")
            kid = jwk.get("kid")
            if use != "jwt-svid" or not isinstance(kid, str) or not kid:
                continue
            if kid in keys:
                raise ValidationError(f"JWT bundle for {trust_domain}: duplicate kid {kid!r}")
            try:
                key = _parse_jwk(jwk)
            except (KeyError, ValueError, TypeError) as exc:
                raise ValidationError(
                    f"JWT bundle for {trust_domain}: key {kid!r} is malformed ({type(exc).__name__})"
                ) from None
            if key is not None:
                keys[kid] = key
        return cls(trust_domain, keys, bytes(jwks))

    def has_verified(self, token: str) -> bool:
        """Whether ``token`` (signature included) already verified against these keys."""
        return token in self._verified

    def remember_verified(self, token: str) -> None:
        """Note that ``token``'s signature verified against these keys (``validate_jwt_svid`` does)."""
        self._verified[token] = True
        if len(self._verified) > _VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)


@dataclass(frozen=True, eq=False)
class JwtBundleSet:
    """JWT bundles by trust domain, as one FetchJWTBundles message delivers them."""

    bundles: Mapping[TrustDomain, JwtBundle]
    digest: bytes

    def bundle_for(self, trust_domain: TrustDomain | str) -> JwtBundle | None:
        """The bundle for a trust domain, or None."""
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        return self.bundles.get(td)

    def validate(self, token: str, audience: str, now: float | None = None) -> JwtSvid:
        """Validate ``token`` for ``audience`` against these bundles (see ``validate_jwt_svid``)."""
        return validate_jwt_svid(token, audience, self, now)
