"""pkcs12: keystore (key + chain) and trust store, read by cryptography, openssl and Java's keytool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from _support.ci import require_binary
from cryptography.hazmat.primitives.serialization import pkcs12
from writers_pki import Pki, openssl

from spiffe_bridge.fileset import FileSetWriter
from spiffe_bridge.formats import X509Options, render_x509


def render(pki: Pki, **options: object) -> dict[str, bytes]:
    files = render_x509("pkcs12", pki.context(), X509Options(**options))  # type: ignore[arg-type]
    assert [(f.name, f.mode) for f in files] == [("svid.p12", 0o600), ("svid_bundle.p12", 0o644)]
    return {f.name: f.data for f in files}


@pytest.mark.parametrize("password", [None, "s3cret"])
def test_keystore_holds_key_and_chain(pki: Pki, password: str | None) -> None:
    data = render(pki, pkcs12_password=password)
    issued = pki.issued[-1]
    loaded = pkcs12.load_pkcs12(data["svid.p12"], password.encode() if password else None)
    assert loaded.key is not None and loaded.cert is not None
    assert loaded.cert.certificate == issued.leaf
    assert loaded.cert.friendly_name == b"spiffe"
    assert [c.certificate for c in loaded.additional_certs] == list(issued.chain[1:])
    assert loaded.key.public_key() == issued.leaf.public_key()
    if password:
        with pytest.raises(ValueError):
            pkcs12.load_pkcs12(data["svid.p12"], b"wrong")


def test_truststore_holds_certificates_only(pki: Pki) -> None:
    data = render(
        pki, include_federated_domains=True, pkcs12_password="pw", pkcs12_truststore_password="trust"
    )
    store = pkcs12.load_pkcs12(data["svid_bundle.p12"], b"trust")
    assert store.key is None and store.cert is None
    names = [c.friendly_name for c in store.additional_certs]
    assert names == [b"example.org-0", b"another.test-0", b"partner.test-0"]
    certs = [c.certificate for c in store.additional_certs]
    assert certs == [*pki.ca.roots, *pki.federated[1].roots, *pki.federated[0].roots]


def test_same_material_renders_the_same_bytes(pki: Pki) -> None:
    ctx = pki.context()
    options = X509Options(pkcs12_password="pw")
    first = render_x509("pkcs12", ctx, options)
    assert first == render_x509("pkcs12", ctx, X509Options(pkcs12_password="pw"))
    assert first != render_x509("pkcs12", ctx, X509Options(pkcs12_password="other"))


def test_openssl_reads_the_keystore(tmp_path: Path, pki: Pki) -> None:
    FileSetWriter(tmp_path).write(render_x509("pkcs12", pki.context(), X509Options(pkcs12_password="pw")))
    result = openssl(
        "pkcs12", "-in", str(tmp_path / "svid.p12"), "-passin", "pass:pw", "-nokeys", check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("BEGIN CERTIFICATE") == 2  # leaf + intermediate


def test_java_keytool_reads_both_stores(tmp_path: Path, pki: Pki) -> None:
    keytool = require_binary("keytool")  # a Java runtime; scripts/install-system-deps.sh installs one
    FileSetWriter(tmp_path).write(
        render_x509("pkcs12", pki.context(), X509Options(pkcs12_password="changeit"))
    )

    def listing(name: str) -> str:
        cmd = [keytool, "-list", "-v", "-storetype", "PKCS12", "-keystore", str(tmp_path / name)]
        done = subprocess.run([*cmd, "-storepass", "changeit"], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    keystore = listing("svid.p12")
    assert "Entry type: PrivateKeyEntry" in keystore and "Certificate chain length: 2" in keystore
    truststore = listing("svid_bundle.p12")
    assert "Entry type: trustedCertEntry" in truststore and "example.org-0" in truststore
