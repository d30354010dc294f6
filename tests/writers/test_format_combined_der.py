"""combined (HAProxy/ghostunnel) and der formats, checked with Python's ssl and openssl."""

from __future__ import annotations

import ssl
from pathlib import Path

from _support.pki import certs_pem, key_pem
from cryptography.hazmat.primitives import serialization
from writers_pki import Pki, openssl

from spiffe_bridge.fileset import FileSetWriter
from spiffe_bridge.formats import X509Options, render_x509


def der(certs: object) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)  # type: ignore[attr-defined]


def test_combined_is_chain_then_key_with_key_mode(pki: Pki) -> None:
    out = {
        f.name: f for f in render_x509("combined", pki.context(), X509Options(include_federated_domains=True))
    }
    issued = pki.issued[-1]
    key = key_pem(issued.private_key)
    assert out["svid_combined.pem"].data == certs_pem(issued.chain) + key
    assert out["svid_combined.pem"].mode == 0o600
    assert out["svid_bundle.pem"].data == certs_pem(pki.ca.roots)
    assert {n for n in out if n.startswith("federated/")} == {
        "federated/another.test.pem",
        "federated/partner.test.pem",
    }


def test_python_ssl_loads_the_combined_file(tmp_path: Path, pki: Pki) -> None:
    FileSetWriter(tmp_path).write(render_x509("combined", pki.context(), X509Options()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(tmp_path / "svid_combined.pem"))  # key taken from the same file
    ctx.load_verify_locations(str(tmp_path / "svid_bundle.pem"))
    pub_cert = openssl("x509", "-in", str(tmp_path / "svid_combined.pem"), "-noout", "-pubkey").stdout
    pub_key = openssl("pkey", "-in", str(tmp_path / "svid_combined.pem"), "-pubout").stdout
    assert pub_cert == pub_key


def test_der_files(tmp_path: Path, pki: Pki) -> None:
    ctx = pki.context()
    issued = pki.issued[-1]
    FileSetWriter(tmp_path).write(render_x509("der", ctx, X509Options(include_federated_domains=True)))
    assert (tmp_path / "svid.der").read_bytes() == der(issued.chain[:1])
    assert (tmp_path / "svid_chain.der").read_bytes() == issued.chain_der()
    assert (tmp_path / "key.p8").read_bytes() == issued.key_der()
    assert (tmp_path / "svid_bundle.der").read_bytes() == pki.ca.bundle_der()
    assert (tmp_path / "federated" / "partner.test.der").read_bytes() == pki.federated[0].bundle_der()
    assert oct((tmp_path / "key.p8").stat().st_mode & 0o777) == oct(0o600)
    pub_cert = openssl(
        "x509", "-inform", "DER", "-in", str(tmp_path / "svid.der"), "-noout", "-pubkey"
    ).stdout
    pub_key = openssl("pkey", "-inform", "DER", "-in", str(tmp_path / "key.p8"), "-pubout").stdout
    assert pub_cert and pub_cert == pub_key
