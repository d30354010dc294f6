"""Local JWT-SVID validation: every JWT-SVID.md rule is checked and failures say which."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.client import decode_jwt_bundles
from spiffe_bridge.devagent.ca import TrustDomainCA
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.errors import JwtSvidError, ValidationError
from spiffe_bridge.jwtbundle import JwtBundle, JwtBundleSet
from spiffe_bridge.jwtsvid import CLOCK_SKEW
from spiffe_bridge.spiffeid import TrustDomain


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def bundles(ca: TrustDomainCA) -> JwtBundleSet:
    return decode_jwt_bundles(pb.JWTBundlesResponse(bundles={ca.id: ca.jwks_json()}))


def _claims(**over: Any) -> dict[str, Any]:
    base = {
        "sub": "spiffe://example.org/web",
        "aud": ["svc"],
        "exp": int(time.time()) + 300,
        "iat": int(time.time()),
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def test_valid_token(ca: TrustDomainCA, bundles: JwtBundleSet) -> None:
    token = ca.mint_jwt_svid("spiffe://example.org/web", ["svc", "other"], ttl=300)
    svid = bundles.validate(token, "other")
    assert str(svid.spiffe_id) == "spiffe://example.org/web"
    assert svid.audience == ("svc", "other")
    assert token not in repr(svid)
    # second validation hits the per-bundle signature cache and still checks claims
    assert bundles.validate(token, "svc").expiry == svid.expiry
    with pytest.raises(JwtSvidError, match="audience"):
        bundles.validate(token, "nope")


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        (_claims(aud=None), "aud"),
        (_claims(aud=[]), "aud"),
        (_claims(exp=None), "exp"),
        (_claims(exp="soon"), "exp"),
        (_claims(exp=int(time.time()) - 10), "expired"),
        (_claims(sub=None), "sub"),
        (_claims(sub="spiffe://Example.org/x"), "not a SPIFFE ID"),
        (_claims(sub="spiffe://unknown.test/x"), "no JWT bundle"),
        (_claims(aud="svc", exp=1), "expired"),  # a single-string aud is allowed
    ],
)
def test_claim_rules(ca: TrustDomainCA, bundles: JwtBundleSet, claims: dict[str, Any], reason: str) -> None:
    token = ca.sign_jwt(claims)
    with pytest.raises(JwtSvidError, match=reason):
        bundles.validate(token, "svc")


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),  # go-spiffe: ErrNotValidYet
        ({"nbf": "soon"}, "'nbf' claim is not a number"),
        ({"nbf": True}, "'nbf' claim is not a number"),
        ({"nbf": float("nan")}, "not a finite number"),  # json.loads reads NaN
        ({"exp": float("inf")}, "not a finite number"),
        ({"iat": int(time.time()) + 3600}, "issued in the future"),  # go-jose: ErrIssuedInTheFuture
        ({"iat": [1]}, "'iat' claim is not a number"),
        ({"sub": "spiffe://example.org"}, "has no path"),
    ],
)
def test_time_and_subject_rules(
    ca: TrustDomainCA, bundles: JwtBundleSet, over: dict[str, Any], reason: str
) -> None:
    with pytest.raises(JwtSvidError, match=reason):
        bundles.validate(ca.sign_jwt(_claims(**over)), "svc")


def test_nbf_and_iat_allow_clock_skew(ca: TrustDomainCA, bundles: JwtBundleSet) -> None:
    now = time.time()
    ahead = int(now + CLOCK_SKEW) - 1  # an agent whose clock runs a little ahead of ours
    token = ca.sign_jwt(_claims(nbf=ahead, iat=ahead))
    assert bundles.validate(token, "svc", now=now).spiffe_id.path == "/web"
    with pytest.raises(JwtSvidError, match="not valid yet"):
        bundles.validate(token, "svc", now=ahead - CLOCK_SKEW - 2)
    with pytest.raises(JwtSvidError, match="expired"):  # exp gets no leeway
        bundles.validate(token, "svc", now=_claims()["exp"])


@pytest.mark.parametrize("kid", [None, "", 7])
def test_token_without_kid_is_rejected(ca: TrustDomainCA, bundles: JwtBundleSet, kid: object) -> None:
    """go-spiffe requires ``kid`` (an absent one: tests/core/test_jwt_differential.py)."""
    token = ca.sign_jwt(_claims(), {"kid": kid})
    with pytest.raises(JwtSvidError, match="no key ID"):
        bundles.validate(token, "svc")


def test_header_rules(ca: TrustDomainCA, bundles: JwtBundleSet) -> None:
    with pytest.raises(JwtSvidError, match="type"):
        bundles.validate(ca.sign_jwt(_claims(), {"typ": "at+jwt"}), "svc")
    with pytest.raises(JwtSvidError, match="key ID"):
        bundles.validate(ca.sign_jwt(_claims(), {"kid": "missing"}), "svc")
    head = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    unsigned = f"{head}.{_b64(json.dumps(_claims()).encode())}."
    with pytest.raises(JwtSvidError, match="algorithm 'none'"):
        bundles.validate(unsigned, "svc")
    hs = f"{_b64(json.dumps({'alg': 'HS256'}).encode())}.{_b64(json.dumps(_claims()).encode())}.c2ln"
    with pytest.raises(JwtSvidError, match="HS256"):
        bundles.validate(hs, "svc")


def test_tampered_signature(ca: TrustDomainCA, bundles: JwtBundleSet) -> None:
    token = ca.sign_jwt(_claims())
    head, _body, _sig = token.split(".")
    forged_body = _b64(json.dumps(_claims(sub="spiffe://example.org/admin")).encode())
    with pytest.raises(JwtSvidError, match="signature"):
        bundles.validate(f"{head}.{forged_body}.{_sig}", "svc")
    other = TrustDomainCA("example.org")
    with pytest.raises(JwtSvidError):
        bundles.validate(other.sign_jwt(_claims()), "svc")


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.e30"])
def test_garbage_tokens(bundles: JwtBundleSet, token: str) -> None:
    with pytest.raises(JwtSvidError):
        bundles.validate(token, "svc")


def test_rsa_and_pss_tokens() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    nums = key.public_key().public_numbers()
    jwk = {
        "kty": "RSA",
        "kid": "r1",
        "use": "jwt-svid",
        "n": _b64(nums.n.to_bytes(256, "big")),
        "e": _b64(b"\x01\x00\x01"),
    }
    bundles = decode_jwt_bundles(
        pb.JWTBundlesResponse(bundles={"spiffe://example.org": json.dumps({"keys": [jwk]}).encode()})
    )
    for alg, pad in (
        ("RS256", padding.PKCS1v15()),
        ("PS256", padding.PSS(padding.MGF1(hashes.SHA256()), 32)),
    ):
        head = _b64(json.dumps({"alg": alg, "kid": "r1", "typ": "JWT"}).encode())
        body = _b64(json.dumps(_claims()).encode())
        sig = key.sign(f"{head}.{body}".encode(), pad, hashes.SHA256())
        assert (
            str(bundles.validate(f"{head}.{body}.{_b64(sig)}", "svc").spiffe_id) == "spiffe://example.org/web"
        )
    assert key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "not a JWK Set"),
        (b'{"keys": [1]}', "not an object"),
        (b'{"keys": [{"kty":"EC","kid":"a","crv":"P-256","x":"AA","y":"AA"}]}', "malformed"),
        (b'{"keys": [{"kty":"EC","kid":"a","crv":"P-256"}]}', "malformed"),
    ],
)
def test_bad_jwks(doc: bytes, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        decode_jwt_bundles(pb.JWTBundlesResponse(bundles={"spiffe://example.org": doc}))


def test_jwks_skips_unusable_keys(ca: TrustDomainCA) -> None:
    doc = json.loads(ca.jwks_json())
    doc["keys"] += [{"kty": "OKP", "kid": "x"}, {"kty": "EC", "use": "x509-svid"}, {"kty": "EC"}]
    bundle = JwtBundle.parse(TrustDomain("example.org"), json.dumps(doc).encode())
    assert len(bundle.keys) == len(json.loads(ca.jwks_json())["keys"])


def test_duplicate_kid_rejected(ca: TrustDomainCA) -> None:
    doc = json.loads(ca.jwks_json())
    doc["keys"] = doc["keys"] * 2
    with pytest.raises(ValidationError, match="duplicate kid"):
        JwtBundle.parse(TrustDomain("example.org"), json.dumps(doc).encode())


def test_jwt_source_rejects_token_not_valid_yet(dev_agent: DevAgent) -> None:
    """The issue's report: JWTSource.validate accepted a token whose nbf is an hour away."""
    from spiffe_bridge import JWTSource

    with JWTSource(dev_agent.address) as source:
        early = dev_agent.ca.sign_jwt(
            _claims(sub="spiffe://example.org/workload", nbf=int(time.time()) + 3600)
        )
        with pytest.raises(JwtSvidError, match="not valid yet"):
            source.validate(early, "svc")
        ok = dev_agent.ca.sign_jwt(_claims(sub="spiffe://example.org/workload", nbf=int(time.time())))
        assert source.validate(ok, "svc").spiffe_id.path == "/workload"
