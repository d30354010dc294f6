"""SPIFFE IDs are parsed strictly, as go-spiffe does (no normalisation)."""

from __future__ import annotations

import pytest

from spiffe_bridge.errors import SpiffeIdError
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain


def test_valid_id() -> None:
    sid = SpiffeId.parse("spiffe://example.org/ns/default/sa/web")
    assert sid.trust_domain == TrustDomain("example.org")
    assert sid.path == "/ns/default/sa/web"
    assert str(sid) == "spiffe://example.org/ns/default/sa/web"
    assert sid.is_member_of(TrustDomain.parse("spiffe://example.org"))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("http://example.org/x", "must start with 'spiffe://'"),
        ("spiffe://", "trust domain is missing"),
        ("spiffe://Example.org/x", "lowercase"),
        ("spiffe://example.org:8080/x", "characters ':'"),
        ("spiffe://example.org/", "trailing"),
        ("spiffe://example.org//x", "empty path segment"),
        ("spiffe://example.org/a/../b", r"'\.' or '\.\.'"),
        ("spiffe://example.org/a%20b", "characters '%'"),
        ("spiffe://example.org/x?q", "characters '?'"),
        ("spiffe://" + "a" * 256, "longer than 255"),
        ("spiffe://example.org/" + "a" * 2100, "longer than 2048"),
    ],
)
def test_invalid_ids(value: str, reason: str) -> None:
    with pytest.raises(SpiffeIdError, match=reason):
        SpiffeId.parse(value)


def test_trust_domain_forms() -> None:
    assert TrustDomain.parse("example.org") == TrustDomain.parse("spiffe://example.org")
    assert TrustDomain("example.org").id_string == "spiffe://example.org"
    with pytest.raises(SpiffeIdError, match="must not have a path"):
        TrustDomain.parse("spiffe://example.org/x")


def test_pyspiffe_conversion() -> None:
    sid = SpiffeId.parse("spiffe://example.org/web")
    assert str(sid.to_pyspiffe()) == str(sid)
    assert sid.trust_domain.to_pyspiffe().name == "example.org"
