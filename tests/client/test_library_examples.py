"""The library examples run unchanged against the dev agent."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from spiffe_bridge.devagent.server import DevAgent

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("script", ["fetch_sync.py", "fetch_async.py"])
@pytest.mark.dev_agent(rotate_every=0.5)
def test_example_runs(dev_agent: DevAgent, script: str) -> None:
    env = {**os.environ, **dev_agent.env()}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "1"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "spiffe://example.org/workload" in out.stdout
    assert "rotated: new serial" in out.stdout


@pytest.mark.dev_agent(rotate_every=0.5)
def test_embed_writer_example_writes_each_rotation(dev_agent: DevAgent, tmp_path: pathlib.Path) -> None:
    """examples/embed_writer.py (docs/library.md, "Embedding"): FileSetWriter + render_x509 per update."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    creds = tmp_path / "creds"
    env = {**os.environ, **dev_agent.env()}
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "embed_writer.py"), str(creds), "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    serials = [line.rsplit(" ", 1)[1] for line in out.stdout.splitlines() if line.startswith("wrote ")]
    assert len(serials) == 3 and len(set(serials)) == 3, out.stdout  # the first update, then two rotations

    assert (creds / "..data").is_symlink()  # the atomic layout: one rename swaps the whole set
    cert = x509.load_pem_x509_certificate((creds / "svid.pem").read_bytes())
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(u) for u in uris.get_values_for_type(x509.UniformResourceIdentifier)] == [
        "spiffe://example.org/workload"
    ]
    key = serialization.load_pem_private_key((creds / "svid_key.pem").read_bytes(), password=None)
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ), "the key file belongs to the certificate next to it"
    assert (creds / "svid_key.pem").stat().st_mode & 0o777 == 0o600
    assert x509.load_pem_x509_certificates((creds / "svid_bundle.pem").read_bytes())
