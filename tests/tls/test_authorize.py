"""Authorizers, and peer verification against per-trust-domain bundles (no sockets)."""

from __future__ import annotations

import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tls_peers import CLIENT_ID, Material, forge, material

from spiffe_bridge.devagent import TrustDomainCA
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain
from spiffe_bridge.tls import (
    Authorizer,
    PeerNotAuthorizedError,
    PeerRefusedError,
    authorize_any,
    authorize_id,
    authorize_if,
    authorize_member_of,
    authorize_one_of,
    verify_peer,
)
from spiffe_bridge.tls._keyfiles import PrivateKeyDir
from spiffe_bridge.tls.authorize import trust_domains_of
from spiffe_bridge.x509bundle import X509Bundle

WEB = SpiffeId.parse("spiffe://example.org/web")
DB = SpiffeId.parse("spiffe://example.org/db")
PARTNER = SpiffeId.parse("spiffe://partner.org/api")


def _refusal(authorizer: Authorizer, peer: SpiffeId) -> str:
    with pytest.raises(PeerNotAuthorizedError) as info:
        authorizer(peer)
    assert info.value.peer_id == peer
    return str(info.value)


def test_authorize_any_accepts_every_verified_peer() -> None:
    authorize_any()(PARTNER)
    assert trust_domains_of(authorize_any()) is None


def test_authorize_id_names_peer_and_expectation() -> None:
    rule = authorize_id("spiffe://example.org/web")
    rule(WEB)
    assert (
        _refusal(rule, DB)
        == "peer spiffe://example.org/db is not authorized: expected spiffe://example.org/web"
    )
    assert trust_domains_of(rule) == frozenset({TrustDomain("example.org")})


def test_authorize_one_of() -> None:
    rule = authorize_one_of(WEB, "spiffe://partner.org/api")
    rule(WEB)
    rule(PARTNER)
    assert "expected one of ['spiffe://example.org/web', 'spiffe://partner.org/api']" in _refusal(rule, DB)
    with pytest.raises(ValueError):
        authorize_one_of()


def test_ids_compare_exactly() -> None:
    with pytest.raises(PeerNotAuthorizedError):
        authorize_id("spiffe://example.org/Web")(WEB)  # paths are case-sensitive


def test_authorize_member_of() -> None:
    rule = authorize_member_of("spiffe://example.org")
    rule(WEB)
    assert (
        _refusal(rule, PARTNER)
        == "peer spiffe://partner.org/api is not authorized: expected a member of example.org"
    )
    both = frozenset({TrustDomain("a.org"), TrustDomain("b.org")})
    assert trust_domains_of(authorize_member_of("a.org", "b.org")) == both
    with pytest.raises(ValueError):
        authorize_member_of()


def test_authorize_if_uses_the_description_and_fails_closed() -> None:
    rule = authorize_if(lambda peer: peer.path.startswith("/billing/"), "expected a path under /billing/")
    rule(SpiffeId.parse("spiffe://example.org/billing/api"))
    assert _refusal(rule, WEB).endswith("expected a path under /billing/")

    def broken(peer: SpiffeId) -> bool:
        raise KeyError("lookup table not loaded")

    message = _refusal(authorize_if(broken, "expected a known peer"), WEB)
    assert "expected a known peer (the check raised KeyError" in message


def test_refusals_are_tls_verification_errors() -> None:
    error = PeerNotAuthorizedError(WEB, "expected nobody")
    assert isinstance(error, ssl.SSLCertVerificationError)
    assert isinstance(error, PeerRefusedError)
    assert (
        error.verify_message
        == str(error)
        == "peer spiffe://example.org/web is not authorized: expected nobody"
    )


# ----- verify_peer -----
def _der(mat: Material) -> tuple[bytes, list[bytes]]:
    certs = x509.load_pem_x509_certificates(mat.chain_pem)
    ders = [c.public_bytes(serialization.Encoding.DER) for c in certs]
    return ders[0], ders[1:]


def _bundles(*cas: TrustDomainCA) -> dict[TrustDomain, X509Bundle]:
    return {
        TrustDomain(ca.trust_domain): X509Bundle.parse_der(TrustDomain(ca.trust_domain), ca.bundle_der())
        for ca in cas
    }


@pytest.fixture(scope="module")
def home() -> TrustDomainCA:
    return TrustDomainCA("example.org", intermediate=True)


@pytest.fixture(scope="module")
def partner() -> TrustDomainCA:
    return TrustDomainCA("partner.org")


def test_verify_peer_walks_intermediates_to_the_ids_own_bundle(
    home: TrustDomainCA, partner: TrustDomainCA
) -> None:
    leaf, intermediates = _der(material(home.issue_x509_svid(CLIENT_ID, ttl=600)))
    assert verify_peer(leaf, _bundles(home, partner), intermediates_der=intermediates) == SpiffeId.parse(
        CLIENT_ID
    )
    with pytest.raises(PeerRefusedError, match="chain does not verify"):
        verify_peer(leaf, _bundles(home, partner), intermediates_der=[])


def test_verify_peer_refuses_a_foreign_root_for_the_id(home: TrustDomainCA, partner: TrustDomainCA) -> None:
    leaf, intermediates = _der(forge(partner, CLIENT_ID))
    with pytest.raises(PeerRefusedError, match=r"does not verify against the bundle of example\.org") as info:
        verify_peer(leaf, _bundles(home, partner), intermediates_der=intermediates)
    assert info.value.peer_id == SpiffeId.parse(CLIENT_ID)
    partner_root = partner.roots[0].public_bytes(serialization.Encoding.DER)
    with pytest.raises(PeerRefusedError, match="anchored in another trust domain"):
        verify_peer(leaf, _bundles(home, partner), verified_chain_der=[leaf, partner_root])


def test_verify_peer_needs_a_bundle_for_the_ids_trust_domain(partner: TrustDomainCA) -> None:
    leaf, _ = _der(material(partner.issue_x509_svid("spiffe://partner.org/api", ttl=600)))
    with pytest.raises(PeerRefusedError, match=r"trust domain partner\.org is not trusted here"):
        verify_peer(leaf, {})


@pytest.mark.parametrize(
    ("uris", "message"),
    [
        (["spiffe://example.org/a", "spiffe://example.org/b"], "exactly one URI SAN, found 2"),
        (["https://example.org/a"], "not a valid SPIFFE ID"),
        (["spiffe://example.org"], "needs a path"),
    ],
)
def test_verify_peer_rejects_malformed_svids(home: TrustDomainCA, uris: list[str], message: str) -> None:
    leaf, _ = _der(forge(home, uris[0], uris=uris))
    with pytest.raises(PeerRefusedError, match=message):
        verify_peer(leaf, _bundles(home))


def test_key_dir_is_private_and_removed(tmp_path: Path) -> None:
    keys = PrivateKeyDir(str(tmp_path))
    assert stat.S_IMODE(os.stat(keys.path).st_mode) == 0o700
    with pytest.raises(ssl.SSLError):
        keys.load_cert_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), b"not pem", b"not pem")
    assert os.listdir(keys.path) == []  # removed even when OpenSSL refuses the files
    keys.close()
    assert keys.closed and not os.path.exists(keys.path)
    with pytest.raises(ValueError):
        keys.load_cert_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), b"", b"")
