"""Differential test: our JWT-SVID validator against PyJWT, an independent signer and verifier.

The dev agent signs and ``spiffe_bridge.jwtsvid`` verifies, so a bug they share cannot show in the other
tests. Here PyJWT signs every token and PyJWT (reading our JWKS with its own parser) gives the
reference verdict on the JWS layer: signature, algorithm, ``exp``/``nbf``/``iat`` and ``aud``. The
SPIFFE rules on top (``sub`` a workload ID, ``kid`` required, ``typ``) are added to that verdict by
hand, each named. Times are an hour away from now, so the two leeway policies never matter.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from spiffe_bridge import jwtsvid
from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.client import decode_jwt_bundles
from spiffe_bridge.errors import JwtSvidError
from spiffe_bridge.jwtbundle import JwtBundleSet

AUDIENCE = "svc"
SUBJECT = "spiffe://example.org/web"
HOUR = 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(kid: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> dict[str, Any]:
    pub = key.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        size = (pub.curve.key_size + 7) // 8
        nums = pub.public_numbers()
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[pub.curve.name]
        return {
            "kty": "EC",
            "kid": kid,
            "use": "jwt-svid",
            "crv": crv,
            "x": _b64(nums.x.to_bytes(size, "big")),
            "y": _b64(nums.y.to_bytes(size, "big")),
        }
    rnums = pub.public_numbers()
    n_len = (rnums.n.bit_length() + 7) // 8
    return {
        "kty": "RSA",
        "kid": kid,
        "use": "jwt-svid",
        "n": _b64(rnums.n.to_bytes(n_len, "big")),
        "e": _b64(rnums.e.to_bytes(3, "big")),
    }


_KEYS: dict[str, tuple[str, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey]] = {}


def _keys() -> dict[str, tuple[str, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey]]:
    """alg -> (kid, private key), one key per family and size, made once per session."""
    if not _KEYS:
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _KEYS.update(
            {
                "ES256": ("ec256", ec.generate_private_key(ec.SECP256R1())),
                "ES384": ("ec384", ec.generate_private_key(ec.SECP384R1())),
                "ES512": ("ec521", ec.generate_private_key(ec.SECP521R1())),
                "RS256": ("rsa", rsa_key),
                "PS384": ("rsa", rsa_key),
            }
        )
    return _KEYS


@pytest.fixture(scope="module")
def jwks() -> bytes:
    unique = {kid: key for kid, key in _keys().values()}
    return json.dumps({"keys": [_jwk(kid, key) for kid, key in unique.items()]}).encode()


@pytest.fixture(scope="module")
def ours(jwks: bytes) -> JwtBundleSet:
    return decode_jwt_bundles(pb.JWTBundlesResponse(bundles={"spiffe://example.org": jwks}))


def _reference(token: str, jwks: bytes, now: float) -> bool:
    """PyJWT's verdict: signature by the JWKS key named in the header, exp/nbf/iat and aud."""
    header = pyjwt.get_unverified_header(token)
    keys = {k.key_id: k for k in pyjwt.PyJWKSet.from_json(jwks.decode()).keys}
    key = keys.get(header.get("kid"))
    if key is None:
        return False
    try:
        pyjwt.decode(
            token,
            key.key,
            algorithms=[header["alg"]] if header.get("alg") in jwtsvid._ALGS else [],
            audience=AUDIENCE,
            options={"require": ["exp", "aud", "sub"]},
        )
    except (pyjwt.PyJWTError, TypeError):  # TypeError: PyJWT refuses an RSA key for an ES alg this way
        return False
    return True


def _claims(now: float, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": SUBJECT, "aud": AUDIENCE, "exp": int(now) + HOUR, "iat": int(now)}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def _claim_cases(now: float) -> dict[str, dict[str, Any]]:
    t = int(now)
    return {
        "valid": _claims(now),
        "aud list": _claims(now, aud=["other", AUDIENCE]),
        "aud other": _claims(now, aud="other"),
        "aud empty list": _claims(now, aud=[]),
        "aud number": _claims(now, aud=7),
        "no aud": _claims(now, aud=None),
        "expired": _claims(now, exp=t - HOUR),
        "no exp": _claims(now, exp=None),
        "exp word": _claims(now, exp="later"),
        "exp float": _claims(now, exp=now + HOUR + 0.5),
        "nbf past": _claims(now, nbf=t - HOUR),
        "nbf future": _claims(now, nbf=t + HOUR),
        "nbf word": _claims(now, nbf="soon"),
        "iat future": _claims(now, iat=t + HOUR),
        "iat word": _claims(now, iat="now"),
        "no iat": _claims(now, iat=None),
        "no sub": _claims(now, sub=None),
    }


def _sign(alg: str, claims: dict[str, Any], **headers: Any) -> str:
    kid, key = _keys()[alg]
    fields = {"kid": kid, "typ": "JWT"}
    fields.update(headers)
    present = {k: v for k, v in fields.items() if v is not None}
    return pyjwt.encode(claims, key, algorithm=alg, headers=present)


def _ours(token: str, bundles: JwtBundleSet) -> bool:
    try:
        bundles.validate(token, AUDIENCE)
    except JwtSvidError:
        return False
    return True


@pytest.mark.parametrize("alg", sorted(_keys()))
def test_claims_agree_with_pyjwt(alg: str, jwks: bytes, ours: JwtBundleSet) -> None:
    now = time.time()
    verdicts = {}
    for name, claims in _claim_cases(now).items():
        token = _sign(alg, claims)
        verdicts[name] = (_ours(token, ours), _reference(token, jwks, now))
    assert {name: o for name, (o, _r) in verdicts.items()} == {name: r for name, (_o, r) in verdicts.items()}
    assert verdicts["valid"] == (True, True)  # the matrix is not all rejections
    assert verdicts["nbf future"] == (False, False)


@pytest.mark.parametrize("alg", sorted(_keys()))
def test_signatures_agree_with_pyjwt(alg: str, jwks: bytes, ours: JwtBundleSet) -> None:
    now = time.time()
    good = _sign(alg, _claims(now))
    head, body, sig = good.split(".")
    other_alg = "ES256" if alg != "ES256" else "ES384"
    forged_body = _b64(json.dumps(_claims(now, sub="spiffe://example.org/admin")).encode())
    flipped = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    flipped[-1] ^= 1
    tokens = {
        "good": good,
        "forged body": f"{head}.{forged_body}.{sig}",
        "flipped bit": f"{head}.{body}.{_b64(bytes(flipped))}",
        "other key, this kid": _sign(other_alg, _claims(now), kid=_keys()[alg][0]),
        "unknown kid": _sign(alg, _claims(now), kid="nope"),
    }
    verdicts = {name: (_ours(t, ours), _reference(t, jwks, now)) for name, t in tokens.items()}
    assert {n: o for n, (o, _r) in verdicts.items()} == {n: r for n, (_o, r) in verdicts.items()}
    assert verdicts["good"] == (True, True)


@pytest.mark.parametrize(
    ("headers", "claims", "spiffe_rule"),
    [
        ({"kid": None}, {}, "no key ID"),  # go-spiffe: "token header missing key id"
        ({"typ": "at+jwt"}, {}, "type"),
        ({}, {"sub": "spiffe://example.org"}, "has no path"),
        ({}, {"sub": "https://example.org/web"}, "not a SPIFFE ID"),
    ],
)
def test_spiffe_rules_on_tokens_pyjwt_accepts(
    jwks: bytes, ours: JwtBundleSet, headers: dict[str, Any], claims: dict[str, Any], spiffe_rule: str
) -> None:
    """Tokens fine as plain JWTs that a JWT-SVID validator must still reject, for a named reason."""
    now = time.time()
    token = _sign("ES256", _claims(now, **claims), **headers)
    header = pyjwt.get_unverified_header(token)
    key = pyjwt.PyJWKSet.from_json(jwks.decode())["ec256"]
    pyjwt.decode(token, key.key, algorithms=["ES256"], audience=AUDIENCE)  # PyJWT: a fine JWT
    assert ("kid" in header) is ("kid" not in headers)
    with pytest.raises(JwtSvidError, match=spiffe_rule):
        ours.validate(token, AUDIENCE)
