"""Hostile agent responses: only ValidationError escapes the parsers, nothing invalid is handed out.

Hypothesis mutates valid messages (random bytes in every DER/PKCS#8/bundle/JWKS/JWT
field, truncation, splicing, length tampering, hostile IDs and JSON values); the
hand-written cases cover the structural attacks (truncated chain, wrong key, CA
leaf, two URI SANs, expiry, empty or foreign bundles, multi-MB messages). The
end-to-end tests push the same through the dev agent to a live client and check
the last good state survives and each rejection is reported with a reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from _support.pki import der, key_der, svid_message
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from fuzz_material import (
    b64url,
    dumps,
    hostile_jwt_bundles,
    hostile_token,
    hostile_x509_bundles,
    hostile_x509_response,
    jwt_problems,
    mutated_json,
    pool,
    sign_raw,
)
from hypothesis import given
from hypothesis import strategies as st
from reliability_support import FAST, context_problems, examples

from spiffe_bridge import JWTSource, SourceStatus, WorkloadClient, X509Source
from spiffe_bridge._der import split_der
from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.client import (
    decode_jwt_bundles,
    decode_jwt_validation,
    decode_x509_bundles,
    decode_x509_context,
)
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.errors import JwtSvidError, ValidationError
from spiffe_bridge.jwtsvid import JwtSvid, validate_jwt_svid
from spiffe_bridge.x509context import X509Context

X509 = "FetchX509SVID"
MB = 1 << 20


def x509_outcome(msg: Any) -> X509Context | ValidationError:
    """Parse like the client does; anything but ValidationError fails the test."""
    try:
        ctx = decode_x509_context(msg)
    except ValidationError as exc:
        assert str(exc), "a rejection must say why"
        return exc
    assert context_problems(ctx) == [], "an invalid context was accepted"
    return ctx


# -- the parsers, directly ----------------------------------------------------------------------


@examples(600)
@given(msg=hostile_x509_response())
def test_fuzz_x509_context(msg: Any) -> None:
    x509_outcome(msg)


def _is_ca(cert: x509.Certificate) -> bool:
    """A bundle authority: basicConstraints cA, and keyCertSign when keyUsage is present."""
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
    try:
        return bool(ca and cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign)
    except x509.ExtensionNotFound:
        return bool(ca)


@examples(250)
@given(msg=hostile_x509_bundles())
def test_fuzz_x509_bundles(msg: Any) -> None:
    try:
        bundles = decode_x509_bundles(msg)
    except ValidationError as exc:
        assert str(exc)
        return
    for td, bundle in bundles.bundles.items():
        assert bundle.authorities and bundle.trust_domain == td
        assert all(_is_ca(cert) for cert in bundle.authorities)


@examples(300)
@given(msg=hostile_jwt_bundles())
def test_fuzz_jwt_bundles(msg: Any) -> None:
    try:
        bundles = decode_jwt_bundles(msg)
    except ValidationError as exc:
        assert str(exc)
        return
    token = pool().token()
    try:
        svid = validate_jwt_svid(token, "svc", bundles)
    except JwtSvidError as exc:
        assert str(exc)
        return
    assert jwt_problems(svid, token, "svc", bundles) == []


@examples(450)
@given(token=hostile_token(), audience=st.sampled_from(["svc", "other", ""]))
def test_fuzz_jwt_svid_validation(token: str, audience: str) -> None:
    p = pool()
    bundles = decode_jwt_bundles(p.jwt_bundles)
    try:
        svid = validate_jwt_svid(token, audience, bundles)
    except JwtSvidError as exc:
        assert str(exc)
        if len(token) > 40:
            assert token not in str(exc), "a rejection must not echo the token"
    else:
        assert jwt_problems(svid, token, audience, bundles) == []
    with contextlib.suppress(JwtSvidError):
        JwtSvid.parse_insecure(token)  # how FetchJWTSVID answers are read


@examples(100)
@given(claims=mutated_json({"sub": "spiffe://example.org/web", "aud": "svc", "exp": 4102444800}))
def test_fuzz_validate_jwt_svid_answer(claims: Any) -> None:
    """The agent's ValidateJWTSVID answer (claims as a protobuf Struct) is checked, never crashes."""
    response = pb.ValidateJWTSVIDResponse(spiffe_id="spiffe://example.org/web")
    if isinstance(claims, dict):
        try:
            response.claims.update(claims)
        except (ValueError, TypeError):
            return  # not representable in a Struct (e.g. integers beyond a double)
    try:
        decode_jwt_validation("token", response)
    except JwtSvidError as exc:
        assert str(exc)


def test_token_with_critical_header_extension_is_rejected() -> None:
    """RFC 7515 4.1.11: a JWS naming extensions in ``crit`` the validator does not know is invalid
    (here ``b64``: false, RFC 7797, which would change what the signature covers)."""
    p = pool()
    now = int(time.time())
    kid = p.ca.jwt_authorities[0].kid
    header = {"alg": "ES256", "kid": kid, "typ": "JWT", "crit": ["b64"], "b64": False}
    claims = {"sub": "spiffe://example.org/web", "aud": "svc", "exp": now + 600}
    token = sign_raw(p.ca, dumps(header), dumps(claims))
    with pytest.raises(JwtSvidError, match="crit"):
        validate_jwt_svid(token, "svc", decode_jwt_bundles(p.jwt_bundles))


# -- structural attacks, one by one ----------------------------------------------------------------


def _with_svid(**fields: Any) -> Any:
    p = pool()
    msg = pb.X509SVIDResponse()
    msg.CopyFrom(p.x509_response)
    for name, value in fields.items():
        setattr(msg.svids[0], name, value)
    return msg


def _forged(uris: list[str], **options: Any) -> Any:
    p = pool()
    cert, key = p.ca.forge_leaf(uris=uris, **options)
    chain = der(cert) + b"".join(der(c) for c in p.ca.intermediates)
    return _with_svid(x509_svid=chain, x509_svid_key=key_der(key))


def _case_truncated_chain() -> Any:
    p = pool()
    leaf_only = split_der(p.x509_response.svids[0].x509_svid, "chain")[0]
    return _with_svid(x509_svid=leaf_only)


def _case_wrong_key() -> Any:
    return _with_svid(x509_svid_key=key_der(ec.generate_private_key(ec.SECP256R1())))


def _case_other_svids_key() -> Any:
    return _with_svid(x509_svid_key=pool().x509_response.svids[1].x509_svid_key)


def _case_fed_for_own() -> Any:
    p = pool()
    msg = _with_svid()
    msg.federated_bundles[p.ca.id] = p.ca.bundle_der()
    return msg


def _case_expired() -> Any:
    now = dt.datetime.now(dt.UTC)
    return _forged(
        ["spiffe://example.org/web"],
        not_before=now - dt.timedelta(hours=2),
        not_after=now - dt.timedelta(seconds=1),
    )


def _case_not_yet_valid() -> Any:
    now = dt.datetime.now(dt.UTC)
    return _forged(["spiffe://example.org/web"], not_before=now + dt.timedelta(hours=1))


STRUCTURAL: dict[str, Callable[[], Any]] = {
    "truncated chain (intermediate missing)": _case_truncated_chain,
    "key of another identity": _case_other_svids_key,
    "random key for the leaf": _case_wrong_key,
    "CA certificate as leaf": lambda: _forged(["spiffe://example.org/web"], ca_flag=True),
    "keyCertSign leaf": lambda: _forged(["spiffe://example.org/web"], key_cert_sign=True),
    "two URI SANs": lambda: _forged(["spiffe://example.org/web", "spiffe://example.org/admin"]),
    "URI SAN of another ID": lambda: _forged(["spiffe://example.org/admin"]),
    "expired SVID": _case_expired,
    "not yet valid SVID": _case_not_yet_valid,
    "empty bundle": lambda: _with_svid(bundle=b""),
    "bundle of another root (same trust domain)": lambda: _with_svid(bundle=pool().other_root.bundle_der()),
    "federated bundle for the own trust domain": _case_fed_for_own,
    "SVID of a federated trust domain's CA": lambda: _with_svid(
        x509_svid=pool().spare_ders[4], spiffe_id="spiffe://example.org/web"
    ),
    "no SVIDs": lambda: pb.X509SVIDResponse(federated_bundles={pool().fed.id: pool().fed.bundle_der()}),
}


@pytest.mark.parametrize("case", list(STRUCTURAL))
def test_structural_attack_rejected(case: str) -> None:
    outcome = x509_outcome(STRUCTURAL[case]())
    assert isinstance(outcome, ValidationError), f"{case} was accepted"


def _huge_x509_cases() -> dict[str, tuple[Any, bool]]:
    """name -> (message, whether it is valid)."""
    p = pool()
    svid = p.x509_response.svids[0]
    root = p.ca.bundle_der()
    inter = der(p.ca.intermediates[0])
    many_feds = {f"spiffe://td{i}.test": p.fed.bundle_der() for i in range(4000)}
    return {
        "bundle + 4 MB garbage": (_with_svid(bundle=root + os.urandom(4 * MB)), False),
        "chain + 8000 intermediates": (_with_svid(x509_svid=svid.x509_svid + inter * 8000), False),
        "4 MB SPIFFE ID": (_with_svid(spiffe_id="spiffe://example.org/" + "a" * (4 * MB)), False),
        "4 MB hint": (_with_svid(hint="h" * (4 * MB)), True),
        "key of 4 MB": (_with_svid(x509_svid_key=svid.x509_svid_key + os.urandom(4 * MB)), False),
        "4000 federated bundles": (
            pb.X509SVIDResponse(svids=[svid], federated_bundles=many_feds),
            True,
        ),
        "20000 garbage CRLs": (
            pb.X509SVIDResponse(svids=[svid], crl=[b"\x30\x03\x02\x01\x00"] * 20000),
            False,
        ),
    }


def test_huge_messages_are_handled_in_bounded_time() -> None:
    for name, (msg, valid) in _huge_x509_cases().items():
        started = time.monotonic()
        outcome = x509_outcome(msg)
        elapsed = time.monotonic() - started
        assert isinstance(outcome, X509Context) is valid, f"{name}: {outcome!r}"
        assert elapsed < 10, f"{name} took {elapsed:.1f}s"


def test_huge_and_deep_jwt_inputs() -> None:
    p = pool()
    td = p.ca.id
    auth = p.ca.jwt_authorities[0].jwk()
    many_keys = dumps({"keys": [{**auth, "kid": f"k{i}"} for i in range(20000)]})
    cases: dict[str, bytes] = {
        "20000 keys (~3 MB)": many_keys,
        "deeply nested arrays": b"[" * 100_000 + b"]" * 100_000,
        "deeply nested objects": b'{"keys":' * 50_000 + b"[]" + b"}" * 50_000,
        "4 MB of garbage": os.urandom(4 * MB),
        "RSA key with a 1 MB modulus": dumps(
            {"keys": [{"kty": "RSA", "kid": "r", "n": b64url(os.urandom(MB)), "e": "AQAB"}]}
        ),
    }
    for name, jwks in cases.items():
        started = time.monotonic()
        try:
            bundles = decode_jwt_bundles(pb.JWTBundlesResponse(bundles={td: jwks}))
        except ValidationError as exc:
            assert str(exc), name
        else:
            with contextlib.suppress(JwtSvidError):
                validate_jwt_svid(p.token(), "svc", bundles)
        assert time.monotonic() - started < 10, name
    deep = b64url(b"[" * 100_000 + b"]" * 100_000)
    bundles = decode_jwt_bundles(p.jwt_bundles)
    for token in (f"{deep}.{deep}.AA", "a" * (4 * MB) + ".b.c", p.token() + "A" * MB):
        with pytest.raises(JwtSvidError):
            validate_jwt_svid(token, "svc", bundles)
    for token in (f"{deep}.{deep}.AA", "a" * (4 * MB) + ".b.c"):
        with pytest.raises(JwtSvidError):
            JwtSvid.parse_insecure(token)


# -- end to end: through the dev agent to a live client ---------------------------------------------


class Checked:
    """Subscriber that re-checks every context handed out."""

    def __init__(self) -> None:
        self.count = 0
        self.problems: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, ctx: X509Context) -> None:
        problems = context_problems(ctx)
        with self.lock:
            self.count += 1
            self.problems += problems


def _sentinels() -> tuple[Any, Any]:
    p = pool()
    a = pb.X509SVIDResponse(svids=[svid_message(p.ca, "spiffe://example.org/sentinel-a")])
    b = pb.X509SVIDResponse(svids=[svid_message(p.ca, "spiffe://example.org/sentinel-b")])
    return a, b


@pytest.mark.dev_agent(trust_domain="example.org")
def test_fuzz_end_to_end_x509_source(dev_agent: DevAgent, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="spiffe_bridge.client")
    sentinels = _sentinels()
    digests = [decode_x509_context(s).digest for s in sentinels]
    checked = Checked()
    flip = [0]
    with X509Source(dev_agent.address, backoff=FAST, timeout=10) as source:
        source.subscribe(checked)

        @examples(120)
        @given(msg=hostile_x509_response())
        def run(msg: Any) -> None:
            expected = x509_outcome(msg)
            rejected = source.state.rejected
            records = len(caplog.records)
            flip[0] ^= 1
            assert dev_agent.push_raw(X509, msg) == 1
            assert dev_agent.push_raw(X509, sentinels[flip[0]]) == 1
            source.wait_for(lambda c: c.digest == digests[flip[0]], timeout=10)
            assert source.status is SourceStatus.READY
            if isinstance(expected, ValidationError):
                assert source.state.rejected == rejected + 1
                assert isinstance(source.last_error, ValidationError) and str(source.last_error)
                reasons = [r.getMessage() for r in caplog.records[records:]]
                assert any("ValidationError" in r for r in reasons), reasons
            else:
                assert source.state.rejected == rejected

        run()
        assert checked.problems == []
        assert source.state.reconnects == 0  # no message broke the stream


def test_garbage_on_the_wire_is_rejected_and_state_kept(dev_agent: DevAgent) -> None:
    """Bytes that are not even protobuf: reported (as a rejected update, or a broken stream that is
    re-opened), never handed out; the last good state stays and later updates still arrive."""
    checked = Checked()
    with X509Source(dev_agent.address, backoff=FAST, timeout=10) as source:
        source.subscribe(checked)

        @examples(30)
        @given(raw=st.binary(min_size=1, max_size=512))
        def run(raw: bytes) -> None:
            try:
                pb.X509SVIDResponse.FromString(raw)
                return  # parses as protobuf: covered by the message fuzzer
            except Exception:
                pass
            good = source.context
            before = source.state.rejected + source.state.reconnects
            dev_agent.push_raw(X509, raw)
            assert source.context.digest == good.digest
            dev_agent.rotate()  # a valid update after it: handed out, whichever way it was handled
            served = decode_x509_context(dev_agent.x509_svid_response()).digest
            source.wait_for(lambda c: c.digest == served and source.status is SourceStatus.READY, 10)
            assert source.state.rejected + source.state.reconnects == before + 1
            assert source.last_error is not None and str(source.last_error)

        run()
        assert checked.problems == []


def test_huge_messages_through_the_client(dev_agent: DevAgent) -> None:
    with X509Source(dev_agent.address, backoff=FAST, timeout=10) as source:
        good = source.context
        for name, (msg, valid) in _huge_x509_cases().items():
            rejected = source.state.rejected
            dev_agent.push_raw(X509, msg)
            dev_agent.rotate()  # a valid update after it proves the stream still works
            served = decode_x509_context(dev_agent.x509_svid_response()).digest
            ctx = source.wait_for(lambda c, d=served: c.digest == d, timeout=20)
            assert context_problems(ctx) == []
            assert source.state.rejected == rejected + (0 if valid else 1), name
        assert source.state.reconnects == 0
        assert good.digest != source.context.digest


def test_fuzz_end_to_end_jwt(dev_agent: DevAgent) -> None:
    """Hostile JWKS pushes keep the last good bundles; hostile FetchJWTSVID/ValidateJWTSVID answers raise
    ValidationError, never anything else."""
    with (
        JWTSource(dev_agent.address, backoff=FAST, timeout=10) as source,
        WorkloadClient(dev_agent.address) as client,
    ):
        good_token = dev_agent.mint_jwt_svid(["svc"])
        # Two valid bundle sets with different digests, pushed alternately after each hostile one.
        first = dev_agent.jwt_bundles_response()
        second = pb.JWTBundlesResponse()
        second.CopyFrom(first)
        second.bundles["spiffe://sentinel.test"] = pool().fed.jwks_json()
        sentinels = [(m, decode_jwt_bundles(m).digest) for m in (first, second)]
        flip = [0]

        @examples(60)
        @given(msg=hostile_jwt_bundles(), token=hostile_token())
        def run(msg: Any, token: str) -> None:
            rejected = source.state.rejected
            try:
                decode_jwt_bundles(msg)
                valid = True
            except ValidationError:
                valid = False
            flip[0] ^= 1
            sentinel, want = sentinels[flip[0]]
            dev_agent.push_raw("FetchJWTBundles", msg)
            dev_agent.push_raw("FetchJWTBundles", sentinel)
            source.wait_for(lambda b: b.digest == want, timeout=10)
            assert source.state.rejected == rejected + (0 if valid else 1)
            assert source.validate(good_token, "svc").spiffe_id
            dev_agent.respond_next_with(
                "FetchJWTSVID",
                pb.JWTSVIDResponse(svids=[pb.JWTSVID(spiffe_id="spiffe://example.org/web", svid=token)]),
            )
            try:
                client.fetch_jwt_svid("svc")
            except ValidationError as exc:
                assert str(exc)
                assert len(token) < 40 or token not in str(exc), "a rejection must not echo the token"

        run()
        assert source.status is SourceStatus.READY


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "svc", "exp": float("inf")},
        {"aud": "svc", "exp": float("nan")},
        {"aud": "svc", "exp": 1e300},
        {"aud": ["svc", 1], "exp": 4102444800},
        {"aud": "svc"},
    ],
    ids=["exp-inf", "exp-nan", "exp-1e300", "aud-mixed", "no-exp"],
)
def test_hostile_validate_answers(dev_agent: DevAgent, claims: dict[str, Any]) -> None:
    response = pb.ValidateJWTSVIDResponse(spiffe_id="spiffe://example.org/web")
    response.claims.update(claims)
    dev_agent.respond_next_with("ValidateJWTSVID", response)
    with WorkloadClient(dev_agent.address) as client:
        try:
            svid = client.validate_jwt_svid("token", "svc")
        except ValidationError as exc:
            assert str(exc)
        else:
            assert svid.expiry > time.time()
