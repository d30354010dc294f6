"""pem format: spiffe-helper's exact bytes and options, verified by openssl and Python's ssl."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from _support.pki import certs_pem, key_pem
from writers_pki import Pki, client_context, openssl

from spiffe_bridge.fileset import FileSetWriter, FileSpec
from spiffe_bridge.formats import FormatError, X509Options, render_x509
from spiffe_bridge.x509context import X509Context


def files(ctx: X509Context, **options: object) -> dict[str, FileSpec]:
    return {f.name: f for f in render_x509("pem", ctx, X509Options(**options))}  # type: ignore[arg-type]


def test_default_layout_is_spiffe_helpers(pki: Pki) -> None:
    ctx = pki.context()
    issued = pki.issued[-1]
    out = files(ctx)
    assert list(out) == ["svid.pem", "svid_key.pem", "svid_bundle.pem"]
    # OpenSSL's PEM writer and Go's pem.Encode agree: 64 columns, newline after every line
    assert out["svid.pem"].data == certs_pem(issued.chain)
    assert out["svid_key.pem"].data == key_pem(issued.private_key)
    assert out["svid_key.pem"].data.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert out["svid_bundle.pem"].data == certs_pem(pki.ca.roots)
    assert (out["svid.pem"].mode, out["svid_key.pem"].mode, out["svid_bundle.pem"].mode) == (
        0o644,
        0o600,
        0o644,
    )


def test_add_intermediates_to_bundle_moves_them(pki: Pki) -> None:
    ctx = pki.context()
    issued = pki.issued[-1]
    out = files(ctx, add_intermediates_to_bundle=True)
    assert out["svid.pem"].data == certs_pem(issued.chain[:1])
    assert out["svid_bundle.pem"].data == certs_pem(pki.ca.roots) + certs_pem(issued.chain[1:])


def test_merged_federation_appends_other_domains_sorted(pki: Pki) -> None:
    out = files(pki.context(), include_federated_domains=True, federated_layout="merged")
    another, partner = sorted(pki.federated, key=lambda ca: ca.trust_domain)
    assert out["svid_bundle.pem"].data == certs_pem(pki.ca.roots) + certs_pem(another.roots) + certs_pem(
        partner.roots
    )
    assert not [n for n in out if n.startswith("federated/")]


def test_federation_defaults_to_one_file_per_trust_domain(pki: Pki) -> None:
    out = files(pki.context(), include_federated_domains=True)
    assert out["svid_bundle.pem"].data == certs_pem(pki.ca.roots)
    for ca in pki.federated:
        assert out[f"federated/{ca.trust_domain}.pem"].data == certs_pem(ca.roots)
    assert not [n for n in files(pki.context()) if n.startswith("federated/")]
    custom = files(pki.context(), include_federated_domains=True, federated_dir="trust/others")
    assert "trust/others/partner.test.pem" in custom


def test_omit_expired_drops_expired_authorities(expiring_pki: Pki) -> None:
    ctx = expiring_pki.context()
    kept = files(ctx)["svid_bundle.pem"].data
    dropped = files(ctx, omit_expired=True)["svid_bundle.pem"].data
    assert kept == certs_pem(expiring_pki.ca.roots) + certs_pem(expiring_pki.extra_roots)
    assert dropped == certs_pem(expiring_pki.ca.roots)


def test_svid_selection_by_hint_and_id(flat_pki: Pki) -> None:
    ctx = flat_pki.context("spiffe://example.org/a", "spiffe://example.org/b", hints=("first", "second"))
    b_chain = certs_pem(flat_pki.issued[-1].chain)
    assert files(ctx, hint="second")["svid.pem"].data == b_chain
    assert files(ctx, spiffe_id="spiffe://example.org/b")["svid.pem"].data == b_chain
    assert files(ctx)["svid.pem"].data == certs_pem(flat_pki.issued[-2].chain)
    assert files(ctx, hint="")["svid.pem"].data == certs_pem(
        flat_pki.issued[-2].chain
    )  # "" = default, like the helper
    with pytest.raises(FormatError, match="hint='nope'"):
        files(ctx, hint="nope")


def test_custom_names_and_modes(flat_pki: Pki) -> None:
    out = files(
        flat_pki.context(),
        svid_file_name="tls/cert.pem",
        svid_key_file_name="tls/key.pem",
        svid_bundle_file_name="ca.pem",
        cert_file_mode=0o640,
        key_file_mode=0o400,
    )
    assert {n: f.mode for n, f in out.items()} == {
        "tls/cert.pem": 0o640,
        "tls/key.pem": 0o400,
        "ca.pem": 0o640,
    }
    with pytest.raises(FormatError):
        files(flat_pki.context(), svid_file_name="../escape.pem")


@pytest.mark.parametrize("move", [False, True])
def test_openssl_verifies_the_written_files(tmp_path: Path, pki: Pki, move: bool) -> None:
    FileSetWriter(tmp_path).write(
        render_x509("pem", pki.context(), X509Options(add_intermediates_to_bundle=move))
    )
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(certs_pem(pki.issued[-1].chain[:1]))
    untrusted = [] if move else ["-untrusted", str(tmp_path / "svid.pem")]
    result = openssl(
        "verify", "-CAfile", str(tmp_path / "svid_bundle.pem"), *untrusted, str(leaf), check=False
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stdout + result.stderr
    pub_cert = openssl("x509", "-in", str(tmp_path / "svid.pem"), "-noout", "-pubkey").stdout
    pub_key = openssl("pkey", "-in", str(tmp_path / "svid_key.pem"), "-pubout").stdout
    assert pub_cert == pub_key


def test_python_ssl_mtls_with_written_files(tmp_path: Path, pki: Pki) -> None:
    out = tmp_path / "server"
    FileSetWriter(out).write(render_x509("pem", pki.context(), X509Options()))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(out / "svid_bundle.pem"))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_cert_chain(str(out / "svid.pem"), str(out / "svid_key.pem"))
    cert, key = pki.client_files(tmp_path / "client")
    listener = socket.create_server(("127.0.0.1", 0))
    peer: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            peer["client"] = tls.getpeercert()
            tls.sendall(b"hello")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname()) as raw,
            client_context(out / "svid_bundle.pem", cert, key).wrap_socket(
                raw, server_hostname="localhost"
            ) as tls,
        ):
            assert tls.recv(5) == b"hello"
            server_uri = dict(tls.getpeercert()["subjectAltName"])["URI"]  # type: ignore[index, arg-type]
    finally:
        thread.join(10)
        listener.close()
    assert server_uri == "spiffe://example.org/workload"
    client_sans = dict(peer["client"]["subjectAltName"])  # type: ignore[index]
    assert client_sans["URI"] == "spiffe://example.org/client"
