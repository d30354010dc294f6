"""envoy-sds files parse strictly with Envoy's own v3 protos and pass Envoy's validation rules.

scripts/envoy-sds-check (Go, go-control-plane) is built once into the cache by
go_checkers.build_go_checker. No Go toolchain: skip (``CI=true``: fail).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from go_checkers import build_go_checker
from writers_pki import Pki

from spiffe_bridge.fileset import FileSetWriter
from spiffe_bridge.formats import X509Options, render_x509

pytestmark = [pytest.mark.consumers, pytest.mark.timeout(900)]


@pytest.fixture(scope="session")
def checker() -> Path:
    return build_go_checker("envoy-sds-check")


@pytest.mark.parametrize("spiffe_validator", [True, False])
def test_envoy_accepts_the_secrets(checker: Path, pki: Pki, tmp_path: Path, spiffe_validator: bool) -> None:
    options = X509Options(envoy_spiffe_validator=spiffe_validator)
    files = render_x509("envoy-sds", pki.context(), options)
    FileSetWriter(tmp_path).write(files)
    done = subprocess.run(
        [str(checker), *(str(tmp_path / f.name) for f in files)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "ok default tls_certificate" in lines[0]
    assert "ok ALL validation_context(envoy.tls.cert_validator.spiffe, 3 trust domains)" in lines[2]


def test_checker_rejects_a_misspelt_field(checker: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"resources": [{"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",'
        ' "name": "default", "tls_certificate": {"certificate_chian": {"inline_string": "x"}}}]}'
    )
    done = subprocess.run([str(checker), str(bad)], capture_output=True, text=True)
    assert done.returncode == 1 and "certificate_chian" in done.stderr
