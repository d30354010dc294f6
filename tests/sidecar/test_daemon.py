"""Daemon mode in-process against the dev agent over a real Unix socket (no gRPC mocks)."""

from __future__ import annotations

import base64
import json
import stat
import sys
from pathlib import Path

import pytest
from _support.daemon import in_process
from _support.wait import wait_until
from cryptography import x509
from sidecar_helpers import lines

from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.sidecar.config import Config, build, parse_text


def leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def serial(path: Path) -> int | None:
    try:
        return leaf(path).serial_number
    except (FileNotFoundError, ValueError):
        return None


def config_for(text: str, agent: DevAgent) -> Config:
    return build(parse_text(f'agent_address = "{agent.address}"\n{text}', "hcl"), environ={})


def reload_counter(tmp_path: Path) -> tuple[Path, str]:
    """A reload_command that appends a line to a file each time it runs."""
    out = tmp_path / "reloads"
    argv = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('reload\\n')", str(out)]
    return out, "reload_command = " + json.dumps(argv)


X509 = """
cert_dir = "{dir}"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
"""


def test_writes_rotates_and_reloads_once_per_change(dev_agent: DevAgent, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    reloads, command = reload_counter(tmp_path)
    shared_key = "key_file_mode = 0640\nallow_shared_key_file_mode = true\n"
    config = config_for(X509.format(dir=certs) + shared_key + command, dev_agent)
    with in_process(config) as daemon:
        wait_until(lambda: len(lines(reloads)) == 1, "first write and reload")
        assert serial(certs / "svid.pem") == dev_agent.svids[0].serial_number
        assert stat.S_IMODE((certs / "svid_key.pem").stat().st_mode) == 0o640
        assert stat.S_IMODE((certs / "svid.pem").stat().st_mode) == 0o644
        assert b"BEGIN PRIVATE KEY" in (certs / "svid_key.pem").read_bytes()
        assert daemon.status.ready()

        dev_agent.rotate()
        new = dev_agent.svids[0].serial_number
        wait_until(lambda: serial(certs / "svid.pem") == new, "rotated SVID on disk")
        wait_until(lambda: len(lines(reloads)) == 2, "one reload for the rotation")

        # An agent restart re-delivers identical material: no rewrite, no reload.
        reconnects = daemon.x509_source.state.reconnects if daemon.x509_source else 0
        dev_agent.restart()
        wait_until(
            lambda: (
                daemon.x509_source is not None
                and daemon.x509_source.state.reconnects > reconnects
                and daemon.x509_source.state.status.value == "ready"
            ),
            "reconnect after agent restart",
        )
        dev_agent.wait_for_streams(1)
        assert len(lines(reloads)) == 2
        assert daemon.status.snapshot()["rotations"]["x509"] == 2


@pytest.mark.dev_agent(jwt_ttl=2.0)
def test_jwt_files_refresh_before_half_life_and_reload(dev_agent: DevAgent, tmp_path: Path) -> None:
    certs = tmp_path / "jwt"
    reloads, command = reload_counter(tmp_path)
    text = f"""
        cert_dir = "{certs}"
        jwt_svids = [{{jwt_audience = "db", jwt_extra_audiences = ["cache"],
                       jwt_svid_file_name = "db.token"}}]
        jwt_bundle_file_name = "jwt_bundle.json"
        {command}
    """
    with in_process(config_for(text, dev_agent)) as daemon:
        wait_until(lambda: (certs / "db.token").exists() and lines(reloads), "JWT files")
        token = (certs / "db.token").read_text()
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        assert claims["aud"] == ["db", "cache"] and claims["sub"] == "spiffe://example.org/workload"
        bundle = json.loads((certs / "jwt_bundle.json").read_text())
        assert list(bundle) == ["example.org"]
        assert "keys" in json.loads(base64.b64decode(bundle["example.org"]))
        assert stat.S_IMODE((certs / "db.token").stat().st_mode) == 0o600
        # 2 s tokens are refreshed after ~1 s; each new token is a change and reloads.
        wait_until(lambda: (certs / "db.token").read_text() != token, "refreshed token", timeout=5)
        wait_until(lambda: len(lines(reloads)) >= 2, "reload after JWT refresh")
        assert daemon.status.snapshot()["rotations"]["jwt"] >= 2


@pytest.mark.parametrize("policy", ["keep", "delete", "unready"])
def test_identity_lost_policies(dev_agent: DevAgent, tmp_path: Path, policy: str) -> None:
    certs = tmp_path / "certs"
    config = config_for(X509.format(dir=certs) + f'on_identity_lost = "{policy}"', dev_agent)
    with in_process(config) as daemon:
        wait_until(daemon.status.ready, "ready")
        dev_agent.deny()
        wait_until(lambda: daemon.status.identity_lost, "identity lost")
        if policy == "delete":
            wait_until(lambda: not (certs / "svid.pem").exists(), "files deleted")
            assert not (certs / "svid_key.pem").exists()
        else:
            assert (certs / "svid_key.pem").exists()
        assert daemon.status.ready() is (policy == "keep")
        dev_agent.allow()
        wait_until(lambda: not daemon.status.identity_lost, "identity restored")
        wait_until(daemon.status.ready, "ready again")
        assert serial(certs / "svid.pem") == dev_agent.svids[0].serial_number


@pytest.mark.dev_agent(
    identities=["spiffe://example.org/front#front", "spiffe://example.org/back#back"],
    federate_with=["partner.org"],
    intermediate=True,
)
def test_hint_outputs_and_federation(dev_agent: DevAgent, tmp_path: Path) -> None:
    certs, combined, sds = tmp_path / "certs", tmp_path / "haproxy", tmp_path / "envoy"
    text = (
        X509.format(dir=certs)
        + f"""
        hint = "back"
        include_federated_domains = true
        add_intermediates_to_bundle = true
        outputs = [
          {{format = "combined", dir = "{combined}", layout = "flat"}},
          {{format = "pem", dir = "{sds}", hint = "front", include_federated_domains = true}},
        ]
    """
    )
    with in_process(config_for(text, dev_agent)) as daemon:
        wait_until(daemon.status.ready, "ready")
        back = leaf(certs / "svid.pem")
        uri = back.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert uri.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/back"]
        assert len(x509.load_pem_x509_certificates((certs / "svid.pem").read_bytes())) == 1  # leaf only
        bundle = x509.load_pem_x509_certificates((certs / "svid_bundle.pem").read_bytes())
        assert len(bundle) >= 3  # own root + intermediate + partner root (merged, like spiffe-helper)
        assert b"PRIVATE KEY" in (combined / "svid_combined.pem").read_bytes()
        assert (sds / "..data").is_symlink()  # outputs default to the symlink layout
        front = leaf(sds / "svid.pem")
        assert "front" in str(front.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        assert any(p.name.startswith("partner.org") for p in (sds / "federated").iterdir())


def test_write_failure_is_reported_and_recovers(dev_agent: DevAgent, tmp_path: Path) -> None:
    blocker = tmp_path / "certs"
    blocker.write_text("a file where the directory should be")
    config = config_for(X509.format(dir=blocker), dev_agent)
    with in_process(config) as daemon:
        wait_until(lambda: daemon.status.write_failures >= 1, "write failure")
        assert not daemon.status.ready() and not daemon.status.live()
        assert daemon.status.snapshot()["file_write_statuses"]["x509_write_status"] == "failed"
        blocker.unlink()
        dev_agent.rotate()
        wait_until(daemon.status.ready, "recovered after the next update")
