"""X.509 material is validated on receipt; anything invalid is rejected with a reason."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from _support.pki import key_der, svid_message
from cryptography.hazmat.primitives.asymmetric import ec

from spiffe_bridge import x509svid
from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.client import decode_x509_bundles, decode_x509_context
from spiffe_bridge.devagent.ca import TrustDomainCA, der_concat
from spiffe_bridge.errors import ValidationError
from spiffe_bridge.spiffeid import TrustDomain
from spiffe_bridge.x509bundle import X509Bundle


def test_valid_context(make_response: Callable[..., Any], ca: TrustDomainCA) -> None:
    ctx = decode_x509_context(make_response("spiffe://example.org/a", "spiffe://example.org/b"))
    assert [str(s.spiffe_id) for s in ctx.svids] == ["spiffe://example.org/a", "spiffe://example.org/b"]
    assert ctx.default_svid is ctx.svids[0]
    assert ctx.svid(hint="h1").spiffe_id == ctx.svids[1].spiffe_id
    assert ctx.svid(spiffe_id="spiffe://example.org/b") is ctx.svids[1]
    with pytest.raises(LookupError):
        ctx.svid(hint="nope")
    bundle = ctx.bundle_for("example.org")
    assert bundle is not None and bundle.der == ca.bundle_der()
    assert ctx.svids[0].key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert ctx.svids[0].chain_pem.count(b"BEGIN CERTIFICATE") == 1
    assert "PRIVATE" not in repr(ctx.svids[0]) and "key" not in repr(ctx.svids[0]).lower()


def test_intermediate_chain(ca_intermediate: TrustDomainCA) -> None:
    msg = pb.X509SVIDResponse(svids=[svid_message(ca_intermediate)])
    svid = decode_x509_context(msg).default_svid
    assert len(svid.cert_chain) == 2 and len(svid.intermediates) == 1


def test_federated_bundles_sorted_and_own_first(
    make_response: Callable[..., Any], fed_ca: TrustDomainCA
) -> None:
    other = TrustDomainCA("another.test")
    msg = make_response(
        federated={"spiffe://partner.test": fed_ca.bundle_der(), other.id: other.bundle_der()}
    )
    ctx = decode_x509_context(msg)
    assert [td.name for td in ctx.bundles] == ["example.org", "another.test", "partner.test"]
    assert {b.trust_domain.name for b in ctx.federated_bundles()} == {"another.test", "partner.test"}
    assert ctx.bundle_for("partner.test") is not None


def test_empty_federated_bundle_means_untrusted(make_response: Callable[..., Any]) -> None:
    ctx = decode_x509_context(make_response(federated={"spiffe://partner.test": b""}))
    assert ctx.bundle_for("partner.test") is None


def test_digest_stable_for_same_content(make_response: Callable[..., Any]) -> None:
    msg = make_response()
    again = pb.X509SVIDResponse.FromString(msg.SerializeToString())
    assert decode_x509_context(msg).digest == decode_x509_context(again).digest
    assert decode_x509_context(make_response()).digest != decode_x509_context(msg).digest


def _bad(ca: TrustDomainCA, **fields: Any) -> Any:
    item = svid_message(ca)
    for k, v in fields.items():
        setattr(item, k, v)
    return pb.X509SVIDResponse(svids=[item])


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"x509_svid": b""}, "empty certificate chain"),
        ({"x509_svid_key": b""}, "empty private key"),
        ({"bundle": b""}, "empty trust bundle"),
        ({"x509_svid": b"\x30\x82\xff"}, "invalid DER length|truncated"),
        ({"x509_svid": b"garbage"}, "expected a DER SEQUENCE"),
        ({"x509_svid_key": b"\x30\x03\x02\x01\x00"}, "not unencrypted PKCS#8"),
        ({"spiffe_id": "spiffe://example.org/other"}, "differs from the SPIFFE ID"),
        ({"spiffe_id": "not-an-id"}, "invalid SPIFFE ID"),
    ],
)
def test_malformed_svid_fields(ca: TrustDomainCA, fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        decode_x509_context(_bad(ca, **fields))


def test_key_must_match_leaf(ca: TrustDomainCA) -> None:
    other_key = key_der(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ValidationError, match="does not match the leaf"):
        decode_x509_context(_bad(ca, x509_svid_key=other_key))


def test_chain_must_verify_against_bundle(ca: TrustDomainCA) -> None:
    stranger = TrustDomainCA("example.org")
    with pytest.raises(ValidationError, match="does not verify against the bundle"):
        decode_x509_context(_bad(ca, bundle=stranger.bundle_der()))


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"uris": ["spiffe://example.org/web", "spiffe://example.org/x"]}, "exactly one URI SAN"),
        ({"uris": ["spiffe://example.org/web"], "ca_flag": True}, "is a CA"),
        ({"uris": ["spiffe://example.org/web"], "key_cert_sign": True}, "keyCertSign"),
        ({"uris": ["spiffe://example.org/web"], "digital_signature": False}, "digitalSignature"),
        (
            {
                "uris": ["spiffe://example.org/web"],
                "not_after": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
            },
            "expired",
        ),
    ],
)
def test_leaf_rules(ca: TrustDomainCA, kwargs: dict[str, Any], reason: str) -> None:
    if "not_after" in kwargs:  # notBefore must precede notAfter
        kwargs["not_after"] = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    cert, key = ca.forge_leaf(**kwargs)
    msg = _bad(ca, x509_svid=der_concat([cert]), x509_svid_key=key_der(key))
    with pytest.raises(ValidationError, match=reason):
        decode_x509_context(msg)


def test_root_id_rejected_for_leaf(ca: TrustDomainCA) -> None:
    cert, key = ca.forge_leaf(uris=["spiffe://example.org"])
    msg = _bad(ca, spiffe_id="spiffe://example.org", x509_svid=der_concat([cert]), x509_svid_key=key_der(key))
    with pytest.raises(ValidationError, match="needs a path"):
        decode_x509_context(msg)


def test_no_svids_rejected() -> None:
    with pytest.raises(ValidationError, match="no SVIDs"):
        decode_x509_context(pb.X509SVIDResponse())


def test_federated_for_own_trust_domain_rejected(
    make_response: Callable[..., Any], ca: TrustDomainCA
) -> None:
    with pytest.raises(ValidationError, match="own trust domain"):
        decode_x509_context(make_response(federated={ca.id: ca.bundle_der()}))


def test_federated_bad_key_rejected(make_response: Callable[..., Any], fed_ca: TrustDomainCA) -> None:
    with pytest.raises(ValidationError, match="not a trust domain ID"):
        decode_x509_context(make_response(federated={"spiffe://Bad": fed_ca.bundle_der()}))


def test_bundle_of_non_ca_rejected(ca: TrustDomainCA) -> None:
    cert, _ = ca.forge_leaf(uris=["spiffe://example.org/web"])
    with pytest.raises(ValidationError, match="not a CA"):
        X509Bundle.parse_der(TrustDomain("example.org"), der_concat([cert]))


def test_bad_crl_rejected(make_response: Callable[..., Any]) -> None:
    msg = make_response()
    msg.crl.append(b"\x30\x00")
    with pytest.raises(ValidationError, match="CRL 0"):
        decode_x509_context(msg)


def test_bundles_message(ca: TrustDomainCA, fed_ca: TrustDomainCA) -> None:
    msg = pb.X509BundlesResponse(bundles={ca.id: ca.bundle_der(), fed_ca.id: fed_ca.bundle_der()})
    bundles = decode_x509_bundles(msg)
    assert set(td.name for td in bundles.bundles) == {"example.org", "partner.test"}
    with pytest.raises(ValidationError, match="no bundles"):
        decode_x509_bundles(pb.X509BundlesResponse())


def test_pyspiffe_conversion(make_response: Callable[..., Any]) -> None:
    ctx = decode_x509_context(make_response())
    py = ctx.to_pyspiffe()
    assert str(py.default_svid.spiffe_id) == str(ctx.default_svid.spiffe_id)


def test_unchanged_svids_are_not_validated_again(ca: TrustDomainCA) -> None:
    """A many-SVID update where one SVID rotated re-checks that one only; the rest come from the cache."""
    items = [svid_message(ca, f"spiffe://example.org/w{i}") for i in range(5)]
    first = decode_x509_context(pb.X509SVIDResponse(svids=items))
    before = x509svid._validated.cache_info()
    items[2] = svid_message(ca, "spiffe://example.org/w2")  # rotated: new leaf and key
    second = decode_x509_context(pb.X509SVIDResponse(svids=items))
    after = x509svid._validated.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (4, 1)
    assert [s is t for s, t in zip(first.svids, second.svids, strict=True)] == [True, True, False, True, True]
    assert second.digest != first.digest


def test_cached_svid_still_expires(ca: TrustDomainCA) -> None:
    """The cache holds what depends on the bytes only: validity windows are checked on every update."""
    msg = pb.X509SVIDResponse(svids=[svid_message(ca)])
    decode_x509_context(msg)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    with pytest.raises(ValidationError, match="expired"):
        decode_x509_context(msg, now=later)


def test_cached_chain_check_is_per_bundle(ca: TrustDomainCA) -> None:
    """The same SVID bytes with another bundle of the same trust domain are verified against that bundle."""
    item = svid_message(ca)
    decode_x509_context(pb.X509SVIDResponse(svids=[item]))
    impostor = TrustDomainCA("example.org")  # same trust domain, different key
    swapped = pb.X509SVID()
    swapped.CopyFrom(item)
    swapped.bundle = impostor.bundle_der()
    with pytest.raises(ValidationError, match="does not verify against the bundle"):
        decode_x509_context(pb.X509SVIDResponse(svids=[swapped]))
