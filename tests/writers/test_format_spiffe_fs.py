"""spiffe-fs: the SPIFFE Filesystem Delivery draft's credential folder, byte rules and set semantics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from writers_pki import Pki, openssl

from spiffe_bridge.devagent.ca import TrustDomainCA
from spiffe_bridge.fileset import FileSetWriter
from spiffe_bridge.formats import X509Options, render_x509

BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----\n([A-Za-z0-9+/=\n]+?)-----END \1-----\n")


def blocks(data: bytes) -> list[tuple[str, bytes]]:
    """Every PEM block, asserting the whole input is blocks back to back (no headers, no gaps)."""
    found = list(BLOCK.finditer(data))
    assert b"".join(m.group(0) for m in found) == data, "data outside or between PEM blocks"
    assert all(b":" not in m.group(2) for m in found), "PEM headers present"
    return [(m.group(1).decode(), m.group(0)) for m in found]


def test_credential_bundle_is_key_then_chain_leaf_to_root(pki: Pki) -> None:
    files = {f.name: f for f in render_x509("spiffe-fs", pki.context(), X509Options())}
    cred = files["credential-bundle.pem"]
    assert cred.mode == 0o600
    kinds = blocks(cred.data)
    assert [k for k, _ in kinds] == ["PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"]  # key, leaf, intermediate
    key = serialization.load_pem_private_key(kinds[0][1], None)
    leaf = x509.load_pem_x509_certificate(kinds[1][1])
    intermediate = x509.load_pem_x509_certificate(kinds[2][1])
    assert key.public_key() == leaf.public_key()
    assert pki.issued[-1].serial_number == leaf.serial_number
    leaf.verify_directly_issued_by(intermediate)


def test_one_trust_bundle_per_trust_domain_never_merged(pki: Pki) -> None:
    ctx = pki.context()
    files = {f.name: f for f in render_x509("spiffe-fs", ctx, X509Options(include_federated_domains=False))}
    assert sorted(files) == [
        "another.test.spiffe-trust-bundle.pem",
        "credential-bundle.pem",
        "example.org.spiffe-trust-bundle.pem",
        "partner.test.spiffe-trust-bundle.pem",
    ]
    for td, bundle in ctx.bundles.items():
        spec = files[f"{td.name}.spiffe-trust-bundle.pem"]
        assert spec.mode == 0o644
        assert all(kind == "CERTIFICATE" for kind, _ in blocks(spec.data))
        assert spec.data == bundle.pem


def test_intermediates_stay_in_the_credential_bundle(pki: Pki) -> None:
    options = X509Options(add_intermediates_to_bundle=True)
    files = {f.name: f for f in render_x509("spiffe-fs", pki.context(), options)}
    assert len(blocks(files["credential-bundle.pem"].data)) == 3
    assert files["example.org.spiffe-trust-bundle.pem"].data.count(b"BEGIN CERTIFICATE") == 1


def test_written_folder_verifies_with_openssl_and_drops_a_defederated_domain(
    pki: Pki, tmp_path: Path
) -> None:
    writer = FileSetWriter(tmp_path)
    writer.write(render_x509("spiffe-fs", pki.context(), X509Options()))
    assert (tmp_path / "credential-bundle.pem").stat().st_mode & 0o777 == 0o600
    cred = (tmp_path / "credential-bundle.pem").read_bytes()
    certs = [pem for kind, pem in blocks(cred) if kind == "CERTIFICATE"]
    (tmp_path.parent / "leaf.pem").write_bytes(certs[0])
    (tmp_path.parent / "untrusted.pem").write_bytes(b"".join(certs[1:]))
    done = openssl(
        "verify",
        "-CAfile",
        str(tmp_path / "example.org.spiffe-trust-bundle.pem"),
        "-untrusted",
        str(tmp_path.parent / "untrusted.pem"),
        str(tmp_path.parent / "leaf.pem"),
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    wrong = openssl(
        "verify",
        "-CAfile",
        str(tmp_path / "partner.test.spiffe-trust-bundle.pem"),
        "-untrusted",
        str(tmp_path.parent / "untrusted.pem"),
        str(tmp_path.parent / "leaf.pem"),
        check=False,
    )
    assert wrong.returncode != 0  # another trust domain's bundle does not vouch for this SVID

    # de-federation: partner.test leaves the agent's answer, so its file leaves the folder
    alone = Pki(pki.ca, federated=(pki.federated[1],))
    writer.write(render_x509("spiffe-fs", alone.context(), X509Options()))
    assert not (tmp_path / "partner.test.spiffe-trust-bundle.pem").exists()
    assert (tmp_path / "another.test.spiffe-trust-bundle.pem").is_file()


@pytest.mark.parametrize("key_type", ["ec-p384", "rsa-2048"])
def test_other_key_types(key_type: str) -> None:
    pki = Pki(TrustDomainCA("example.org", key_type=key_type))  # type: ignore[arg-type]
    files = {f.name: f for f in render_x509("spiffe-fs", pki.context(), X509Options())}
    kinds = blocks(files["credential-bundle.pem"].data)
    assert [k for k, _ in kinds] == ["PRIVATE KEY", "CERTIFICATE"]
