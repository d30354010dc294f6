"""bundle-map (gRFC A87): the JSON shape, and go-spiffe's spiffebundle parser accepting it.

scripts/bundle-map-check (Go, go-spiffe) is built once into the cache by
go_checkers.build_go_checker; it also verifies SVID chains against the map with
x509svid.Verify. No Go toolchain: skip (``CI=true``: fail).
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from go_checkers import build_go_checker
from writers_pki import Pki

from spiffe_bridge.devagent.ca import TrustDomainCA
from spiffe_bridge.fileset import FileSetWriter
from spiffe_bridge.formats import X509Options, render_x509

pytestmark = [pytest.mark.consumers, pytest.mark.timeout(900)]


@pytest.fixture(scope="session")
def checker() -> Path:
    return build_go_checker("bundle-map-check")


def test_shape(pki: Pki) -> None:
    ctx = pki.context()
    (spec,) = render_x509("bundle-map", ctx, X509Options())
    assert spec.name == "spiffe_bundle_map.json" and spec.mode == 0o644
    doc = json.loads(spec.data)
    assert list(doc) == ["trust_domains"]
    assert sorted(doc["trust_domains"]) == ["another.test", "example.org", "partner.test"]
    for td, bundle in ctx.bundles.items():
        keys = doc["trust_domains"][td.name]["keys"]
        assert [base64.b64decode(k["x5c"][0]) for k in keys] == list(bundle.authorities_der)
        for key in keys:
            assert key["use"] == "x509-svid" and key["kty"] == "EC" and key["crv"] == "P-256"
            cert = x509.load_der_x509_certificate(base64.b64decode(key["x5c"][0]))
            numbers = cert.public_key().public_numbers()  # type: ignore[union-attr]
            x = int.from_bytes(base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4)), "big")
            assert x == numbers.x and len(key["x"]) == 43  # fixed-width coordinate, no padding
    assert "PRIVATE" not in spec.data.decode()


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
def test_go_spiffe_parses_the_map_and_verifies_svids_with_it(
    checker: Path, tmp_path: Path, key_type: str
) -> None:
    pki = Pki(
        TrustDomainCA("example.org", intermediate=True, key_type=key_type),  # type: ignore[arg-type]
        federated=(TrustDomainCA("partner.test", key_type=key_type),),  # type: ignore[arg-type]
    )
    FileSetWriter(tmp_path / "map").write(render_x509("bundle-map", pki.context(), X509Options()))
    FileSetWriter(tmp_path / "fs").write(render_x509("spiffe-fs", pki.context(), X509Options()))
    partner = Pki(pki.federated[0])
    partner_files = partner.client_files(tmp_path / "partner", "spiffe://partner.test/peer")
    done = subprocess.run(
        [
            str(checker),
            str(tmp_path / "map" / "spiffe_bundle_map.json"),
            str(tmp_path / "fs" / "credential-bundle.pem"),
            str(partner_files[0]),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "example.org: ok 1 x509 authorities"
    assert lines[1] == "partner.test: ok 1 x509 authorities"
    assert lines[2].endswith("verified spiffe://example.org/workload")
    assert lines[3].endswith("verified spiffe://partner.test/peer")


def test_checker_rejects_an_unknown_trust_domain(checker: Path, pki: Pki, tmp_path: Path) -> None:
    FileSetWriter(tmp_path / "map").write(render_x509("bundle-map", pki.context(), X509Options()))
    stranger = Pki(TrustDomainCA("stranger.test"))
    cert, _ = stranger.client_files(tmp_path / "stranger", "spiffe://stranger.test/x")
    done = subprocess.run(
        [str(checker), str(tmp_path / "map" / "spiffe_bundle_map.json"), str(cert)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "stranger.test" in done.stderr


def test_checker_rejects_a_key_without_x5c(checker: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"trust_domains": {"example.org": {"keys": [{"use": "x509-svid", "kty": "EC"}]}}}')
    done = subprocess.run([str(checker), str(bad)], capture_output=True, text=True)
    assert done.returncode == 1 and "example.org" in done.stderr
