"""JWT-SVIDs: parsing a token and validating it locally against JWT bundles.

Validation follows JWT-SVID.md and go-spiffe's ``jwtsvid.ParseAndValidate``:
algorithm allow-list, optional ``typ`` (JWT or JOSE), a required ``kid`` looked
up in the bundle of the subject's trust domain, ``aud`` containing the expected
audience, ``exp`` in the future, ``nbf`` and ``iat`` not later than now plus
``CLOCK_SKEW`` (go-jose's leeway), ``sub`` a workload SPIFFE ID (with a path).
Signature checks are remembered per bundle (``jwtbundle``), so validating the
same token again costs only the claim checks.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from spiffe_bridge._encoding import b64url_decode
from spiffe_bridge.errors import JwtSvidError, SpiffeIdError
from spiffe_bridge.spiffeid import SpiffeId

if TYPE_CHECKING:  # jwtbundle imports this module (JwtBundleSet.validate); bundles are only read here
    from spiffe_bridge.jwtbundle import JwtBundleSet, PublicKey

__all__ = ["CLOCK_SKEW", "JwtSvid", "check_claims", "validate_jwt_svid"]

# alg -> (hash, key family, EC curve name or None)
_ALGS: dict[str, tuple[type[hashes.HashAlgorithm], str, str | None]] = {
    "RS256": (hashes.SHA256, "RS", None),
    "RS384": (hashes.SHA384, "RS", None),
    "RS512": (hashes.SHA512, "RS", None),
    "PS256": (hashes.SHA256, "PS", None),
    "PS384": (hashes.SHA384, "PS", None),
    "PS512": (hashes.SHA512, "PS", None),
    "ES256": (hashes.SHA256, "ES", "secp256r1"),
    "ES384": (hashes.SHA384, "ES", "secp384r1"),
    "ES512": (hashes.SHA512, "ES", "secp521r1"),
}
# Seconds an ``nbf``/``iat`` may lie ahead of our clock (agent and workload clocks differ a little);
# go-jose uses the same minute. ``exp`` gets none: a token is never accepted after it expires.
CLOCK_SKEW = 60.0
#: One ECDSA parameter object per algorithm, made once rather than per token.
_ECDSA: dict[str, ec.ECDSA] = {alg: ec.ECDSA(h()) for alg, (h, family, _) in _ALGS.items() if family == "ES"}


@dataclass(frozen=True, eq=False)
class JwtSvid:
    """A JWT-SVID: the token plus its parsed subject, audience, expiry and claims."""

    spiffe_id: SpiffeId
    token: str = field(repr=False)
    audience: tuple[str, ...]
    expiry: int
    claims: Mapping[str, Any] = field(repr=False)
    hint: str = ""

    @property
    def issued_at(self) -> int | None:
        """The ``iat`` claim when present."""
        iat = self.claims.get("iat")
        return int(iat) if isinstance(iat, int | float) else None

    @classmethod
    def parse_insecure(cls, token: str, hint: str = "") -> JwtSvid:
        """Parse without checking the signature (for tokens the agent just minted for us)."""
        _header, claims, _signed, _sig = _split(token)
        sid, aud, exp = check_claims(claims)
        return cls(sid, token, aud, exp, claims, hint)


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], str, bytes]:
    if not isinstance(token, str) or token.count(".") != 2:
        raise JwtSvidError("token is not a JWS in compact serialization")
    head_b64, body_b64, sig_b64 = token.split(".")
    try:
        header = _header(head_b64)
        claims = json.loads(b64url_decode(body_b64))
        signature = b64url_decode(sig_b64)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise JwtSvidError("token header, claims or signature is not valid base64url JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtSvidError("token header and claims must be JSON objects")
    return header, claims, head_b64 + "." + body_b64, signature


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """An RFC 7519 NumericDate claim: absent, or a finite JSON number (never a bool or string)."""
    if name not in claims:
        return None
    value = claims[name]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise JwtSvidError(f"token {name!r} claim is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise JwtSvidError(f"token {name!r} claim is not a finite number")
    return float(value)


@functools.lru_cache(maxsize=256)
def _header(head_b64: str) -> Any:
    """A decoded JOSE header; tokens of one issuer share it, so it is decoded once (read-only)."""
    return json.loads(b64url_decode(head_b64))


def check_claims(claims: Mapping[str, Any]) -> tuple[SpiffeId, tuple[str, ...], int]:
    """The JWT-SVID claim rules that hold at any time; returns (subject, audiences, ``exp``).

    ``sub`` a SPIFFE ID with a path, ``aud`` a string or a non-empty list of strings,
    ``exp`` present, and ``exp``/``nbf``/``iat`` finite numbers when present. Raises
    JwtSvidError naming the failed rule. Whoever checked the signature (this module,
    or the agent's ValidateJWTSVID) applies it to the claims.
    """
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise JwtSvidError("token has no 'sub' claim")
    try:
        sid = SpiffeId.parse(sub)
    except SpiffeIdError as exc:
        raise JwtSvidError(f"token subject is not a SPIFFE ID: {exc}") from None
    if not sid.path:  # a trust domain ID names the trust domain, not a workload (as for X509-SVIDs)
        raise JwtSvidError(f"token subject {sub!r} has no path, so it names no workload")
    aud = claims.get("aud")
    if isinstance(aud, str):
        auds: tuple[str, ...] = (aud,)
    elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        auds = tuple(aud)
    else:
        raise JwtSvidError("token has no valid 'aud' claim")
    if "exp" not in claims:
        raise JwtSvidError("token has no numeric 'exp' claim")
    exp = _numeric_date(claims, "exp")
    _numeric_date(claims, "nbf")
    _numeric_date(claims, "iat")
    assert exp is not None
    return sid, auds, int(exp)


def _check_times(claims: Mapping[str, Any], sid: SpiffeId, exp: int, now: float) -> None:
    """``exp`` strictly in the future; ``nbf`` and ``iat`` at most ``CLOCK_SKEW`` ahead of ``now``."""
    if exp <= now:
        raise JwtSvidError(f"token for {sid} has expired")
    nbf = _numeric_date(claims, "nbf")
    if nbf is not None and nbf > now + CLOCK_SKEW:
        raise JwtSvidError(f"token for {sid} is not valid yet ('nbf' is {nbf - now:.0f}s ahead)")
    iat = _numeric_date(claims, "iat")
    if iat is not None and iat > now + CLOCK_SKEW:
        raise JwtSvidError(f"token for {sid} was issued in the future ('iat' is {iat - now:.0f}s ahead)")


def _verify_signature(key: PublicKey, alg: str, signed: bytes, signature: bytes) -> bool:
    hash_cls, family, curve = _ALGS[alg]
    try:
        if family == "ES":
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != curve:
                return False
            size = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            )
            key.verify(der, signed, _ECDSA[alg])
            return True
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        pad: padding.AsymmetricPadding
        if family == "PS":
            pad = padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=padding.PSS.DIGEST_LENGTH)
        else:
            pad = padding.PKCS1v15()
        key.verify(signature, signed, pad, hash_cls())
        return True
    except InvalidSignature:
        return False


def validate_jwt_svid(token: str, audience: str, bundles: JwtBundleSet, now: float | None = None) -> JwtSvid:
    """Validate a JWT-SVID for ``audience``; raise JwtSvidError naming the failed check."""
    header, claims, signed, signature = _split(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in _ALGS:
        raise JwtSvidError(f"token algorithm {alg!r} is not allowed")
    typ = header.get("typ")
    if typ is not None and typ not in ("JWT", "JOSE"):
        raise JwtSvidError(f"token type {typ!r} is not JWT or JOSE")
    if "crit" in header:  # RFC 7515 4.1.11: we understand no JWS extension
        raise JwtSvidError("token names critical header extensions ('crit'); none are supported")
    sid, auds, exp = check_claims(claims)
    if audience not in auds:
        raise JwtSvidError(f"token audience {list(auds)!r} does not contain {audience!r}")
    _check_times(claims, sid, exp, time.time() if now is None else now)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:  # go-spiffe: "token header missing key id"
        raise JwtSvidError("token header has no key ID ('kid')")
    bundle = bundles.bundles.get(sid.trust_domain)
    if bundle is None:
        raise JwtSvidError(f"no JWT bundle for trust domain {sid.trust_domain}")
    if not bundle.has_verified(token):  # keyed on the whole token: signature included
        key = bundle.keys.get(kid)
        if key is None:
            raise JwtSvidError(f"token key ID {kid!r} is not in the bundle of {sid.trust_domain}")
        if not _verify_signature(key, alg, signed.encode(), signature):
            raise JwtSvidError(f"token signature for {sid} does not verify")
        bundle.remember_verified(token)
    return JwtSvid(sid, token, auds, exp, claims)
