"""The CA issues X509-SVIDs, CA certificates and JWT-SVIDs exactly as the SPIFFE specs require."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from _support.ci import needs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from spiffe import JwtBundle, JwtSvid, TrustDomain, X509Bundle, X509Svid

from spiffe_bridge._encoding import b64url_decode
from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.client import decode_jwt_bundles
from spiffe_bridge.devagent.ca import TrustDomainCA, der_concat
from spiffe_bridge.errors import JwtSvidError
from spiffe_bridge.jwtsvid import validate_jwt_svid

SVID_ID = "spiffe://example.org/ns/web"


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def test_leaf_follows_x509_svid_spec() -> None:
    ca = TrustDomainCA("example.org")
    mat = ca.issue_x509_svid(SVID_ID, ttl=600, dns_names=["web.example.org"])
    leaf = mat.leaf

    san = ext(leaf, x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SVID_ID]
    assert san.get_values_for_type(x509.DNSName) == ["web.example.org"]

    bc = ext(leaf, x509.BasicConstraints)
    assert bc.critical and isinstance(bc.value, x509.BasicConstraints) and bc.value.ca is False

    ku = ext(leaf, x509.KeyUsage)
    assert ku.critical and isinstance(ku.value, x509.KeyUsage)
    assert ku.value.digital_signature and not ku.value.key_cert_sign and not ku.value.crl_sign

    eku = ext(leaf, x509.ExtendedKeyUsage).value
    assert isinstance(eku, x509.ExtendedKeyUsage)
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}

    ski = ext(ca.roots[0], x509.SubjectKeyIdentifier).value
    aki = ext(leaf, x509.AuthorityKeyIdentifier).value
    assert isinstance(ski, x509.SubjectKeyIdentifier) and isinstance(aki, x509.AuthorityKeyIdentifier)
    assert aki.key_identifier == ski.digest
    ext(leaf, x509.SubjectKeyIdentifier)

    now = dt.datetime.now(dt.UTC)
    assert leaf.not_valid_before_utc < now - dt.timedelta(seconds=5)  # backdated for clock skew
    lifetime = leaf.not_valid_after_utc - now
    assert dt.timedelta(seconds=590) < lifetime <= dt.timedelta(seconds=600)

    assert isinstance(mat.private_key, ec.EllipticCurvePrivateKey)
    assert mat.private_key.curve.name == "secp256r1"
    assert mat.private_key.public_key() == leaf.public_key()


def test_ca_certificates_follow_spec() -> None:
    ca = TrustDomainCA("example.org", intermediate=True)
    for cert in (*ca.roots, *ca.intermediates):
        bc = ext(cert, x509.BasicConstraints)
        assert bc.critical and isinstance(bc.value, x509.BasicConstraints) and bc.value.ca
        ku = ext(cert, x509.KeyUsage)
        assert ku.critical and isinstance(ku.value, x509.KeyUsage)
        assert ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
        san = ext(cert, x509.SubjectAlternativeName).value
        assert isinstance(san, x509.SubjectAlternativeName)
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org"]
    assert len(ca.intermediates) == 1


def test_wire_encodings_parse_with_py_spiffe() -> None:
    ca = TrustDomainCA("example.org", intermediate=True)
    mat = ca.issue_x509_svid(SVID_ID, ttl=600)
    svid = X509Svid.parse_raw(mat.chain_der(), mat.key_der())
    assert str(svid.spiffe_id) == SVID_ID
    assert [c.serial_number for c in svid.cert_chain] == [c.serial_number for c in mat.chain]
    key = serialization.load_der_private_key(mat.key_der(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    bundle = X509Bundle.parse_raw(TrustDomain("example.org"), ca.bundle_der())
    assert {c.serial_number for c in bundle.x509_authorities} == {ca.roots[0].serial_number}


def test_intermediate_chain_verifies_with_cryptography() -> None:
    ca = TrustDomainCA("example.org", intermediate=True)
    mat = ca.issue_x509_svid(SVID_ID, ttl=600)
    assert len(mat.chain) == 2 and mat.chain[1] == ca.intermediates[0]
    verifier = PolicyBuilder().store(Store(list(ca.roots))).build_client_verifier()
    verified = verifier.verify(mat.leaf, list(mat.chain[1:]))
    assert [c.serial_number for c in verified.chain] == [
        mat.leaf.serial_number,
        ca.intermediates[0].serial_number,
        ca.roots[0].serial_number,
    ]
    stranger = TrustDomainCA("example.org")
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store(list(stranger.roots))).build_client_verifier().verify(
            mat.leaf, list(mat.chain[1:])
        )


@needs(shutil.which("openssl"), "needs openssl")
def test_intermediate_chain_verifies_with_openssl(tmp_path: Path) -> None:
    ca = TrustDomainCA("example.org", intermediate=True)
    mat = ca.issue_x509_svid(SVID_ID, ttl=600)

    def pem(path: Path, certs: tuple[x509.Certificate, ...]) -> str:
        path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
        return str(path)

    cmd = [
        "openssl", "verify", "-purpose", "sslclient",
        "-CAfile", pem(tmp_path / "root.pem", ca.roots),
        "-untrusted", pem(tmp_path / "inter.pem", ca.intermediates),
        pem(tmp_path / "leaf.pem", (mat.leaf,)),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_every_issue_has_a_new_key_and_serial() -> None:
    ca = TrustDomainCA("example.org")
    first = ca.issue_x509_svid(SVID_ID, ttl=600)
    second = ca.issue_x509_svid(SVID_ID, ttl=600)
    assert first.serial_number != second.serial_number
    assert first.key_der() != second.key_der()


def test_ttl_is_capped_by_ca_lifetime() -> None:
    ca = TrustDomainCA("example.org", ca_ttl=120)
    mat = ca.issue_x509_svid(SVID_ID, ttl=3600)
    assert mat.leaf.not_valid_after_utc == ca.roots[0].not_valid_after_utc


def test_other_key_types() -> None:
    ca = TrustDomainCA("example.org", key_type="ec-p384")
    mat = ca.issue_x509_svid(SVID_ID, ttl=60, key_type="rsa-2048")
    assert mat.private_key.key_size == 2048
    X509Svid.parse_raw(mat.chain_der(), mat.key_der())


def test_root_rotation_keeps_previous_root_until_dropped() -> None:
    ca = TrustDomainCA("example.org")
    old_root = ca.roots[0]
    old_svid = ca.issue_x509_svid(SVID_ID, ttl=600)
    ca.rotate_x509_authority()
    assert ca.roots[1] == old_root and ca.roots[0] != old_root
    assert ca.bundle_der() == der_concat(ca.roots)
    verifier = PolicyBuilder().store(Store(list(ca.roots))).build_client_verifier()
    verifier.verify(old_svid.leaf, [])  # still trusted during the overlap
    ca.drop_previous_x509_authorities()
    assert ca.roots == (ca.roots[0],) and old_root not in ca.roots


def test_rejects_ids_outside_the_trust_domain() -> None:
    ca = TrustDomainCA("example.org")
    for bad in ("spiffe://other.org/w", "spiffe://example.org", "spiffe://example.org/a//b"):
        with pytest.raises(ValueError):
            ca.issue_x509_svid(bad, ttl=60)


def test_jwt_svid_header_claims_and_jwks() -> None:
    ca = TrustDomainCA("example.org")
    token = ca.mint_jwt_svid(SVID_ID, ["svc"], ttl=300)
    header = json.loads(b64url_decode(token.split(".")[0]))
    assert header == {"alg": "ES256", "kid": ca.jwt_authorities[0].kid, "typ": "JWT"}
    claims = json.loads(b64url_decode(token.split(".")[1]))
    assert claims["sub"] == SVID_ID and claims["aud"] == "svc"
    assert 295 <= claims["exp"] - claims["iat"] <= 300

    jwks = json.loads(ca.jwks_json())
    (key,) = jwks["keys"]
    assert key["kty"] == "EC" and key["crv"] == "P-256" and key["use"] == "jwt-svid"
    assert key["kid"] == header["kid"] and set(key) == {"kty", "kid", "crv", "x", "y", "use"}

    bundle = JwtBundle.parse(TrustDomain("example.org"), ca.jwks_json())
    parsed = JwtSvid.parse_and_validate(token, bundle, {"svc"})
    assert str(parsed.spiffe_id) == SVID_ID


def test_jwt_validation_rules() -> None:
    ca = TrustDomainCA("example.org")

    bundles = decode_jwt_bundles(pb.JWTBundlesResponse(bundles={ca.id: ca.jwks_json()}))

    good = ca.mint_jwt_svid(SVID_ID, ["a", "b"], ttl=60)
    assert str(validate_jwt_svid(good, "b", bundles).spiffe_id) == SVID_ID
    bad_tokens = {
        "audience": (good, "c"),
        "expired": (ca.sign_jwt({"sub": SVID_ID, "aud": "a", "exp": 1}), "a"),
        "no expiry": (ca.sign_jwt({"sub": SVID_ID, "aud": "a"}), "a"),
        "signature": (good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"), "a"),
        "no key": (ca.sign_jwt({"sub": SVID_ID, "aud": "a", "exp": 2**40}, {"kid": "x"}), "a"),
        "typ": (ca.sign_jwt({"sub": SVID_ID, "aud": "a", "exp": 2**40}, {"typ": "at+jwt"}), "a"),
        "other domain": (ca.sign_jwt({"sub": "spiffe://o.org/w", "aud": "a", "exp": 2**40}), "a"),
        "malformed": ("not-a-token", "a"),
    }
    for name, (token, audience) in bad_tokens.items():
        with pytest.raises(JwtSvidError):
            validate_jwt_svid(token, audience, bundles)
            pytest.fail(f"accepted token with bad {name}")
