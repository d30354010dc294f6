"""``spiffe-bridge fetch`` and ``linkerd-env`` against the dev agent: files, summaries, no key material."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from _support.ci import require

from spiffe_bridge.cli.main import main
from spiffe_bridge.formats import X509_FORMATS


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def no_key_material(text: str) -> None:
    assert "PRIVATE KEY" not in text and "eyJ" not in text


@pytest.mark.parametrize("fmt", X509_FORMATS)
def test_fetch_x509_writes_each_format(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    extra = ["--linkerd-server-name", "web.local"] if fmt == "linkerd" else []
    code, out, err = run(
        capsys,
        "fetch",
        "x509",
        "--address",
        dev_agent.address,
        "--write",
        str(tmp_path),
        "--format",
        fmt,
        *extra,
    )
    assert code == 0, err
    summary = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert summary["spiffe_id"] == "spiffe://example.org/workload"
    assert summary["format"] == fmt and summary["changed"] == "True"
    for entry in summary["files"].split(", "):
        name = entry.split(" (")[0]
        assert (tmp_path / name).is_file()
    no_key_material(out + err)


def test_fetch_x509_json_summary_and_no_op_rewrite(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["fetch", "x509", "--address", dev_agent.address, "--write", str(tmp_path), "--json"]
    assert run(capsys, *args)[0] == 0
    code, out, _ = run(capsys, *args)
    doc = json.loads(out)
    assert code == 0 and doc["changed"] is False
    assert doc["files"] == ["svid.pem (0644)", "svid_key.pem (0600)", "svid_bundle.pem (0644)"]
    assert doc["trust_domains"] == ["example.org"] and doc["expires_at"].endswith("Z")


@pytest.mark.dev_agent(federate_with=["partner.test"], intermediate=True)
def test_fetch_x509_helper_options(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run(
        capsys,
        "fetch",
        "x509",
        "--address",
        dev_agent.address,
        "--write",
        str(tmp_path),
        "--layout",
        "flat",
        "--include-federated-domains",
        "--add-intermediates-to-bundle",
        "--key-file-mode",
        "0640",
        "--allow-shared-key-file-mode",
    )
    assert code == 0, err
    assert (tmp_path / "federated" / "partner.test.pem").is_file()
    assert (tmp_path / "svid.pem").read_bytes().count(b"BEGIN CERTIFICATE") == 1
    assert (tmp_path / "svid_bundle.pem").read_bytes().count(b"BEGIN CERTIFICATE") == 2
    assert oct((tmp_path / "svid_key.pem").stat().st_mode & 0o777) == oct(0o640)
    assert not (tmp_path / "svid.pem").is_symlink()


def test_fetch_x509_without_write_only_prints(dev_agent: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "fetch", "x509", "--address", dev_agent.address)
    assert code == 0 and "spiffe_id: spiffe://example.org/workload" in out and "files" not in out
    no_key_material(out)


def test_pkcs12_password_comes_from_env_or_file(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives.serialization import pkcs12

    monkeypatch.setenv("P12_PASS", "from-env")
    base = ["fetch", "x509", "--address", dev_agent.address, "--format", "pkcs12"]
    assert run(capsys, *base, "--write", str(tmp_path / "a"), "--pkcs12-password-env", "P12_PASS")[0] == 0
    pkcs12.load_pkcs12((tmp_path / "a" / "svid.p12").read_bytes(), b"from-env")
    secret = tmp_path / "pass.txt"
    secret.write_text("from-file\n")
    assert run(capsys, *base, "--write", str(tmp_path / "b"), "--pkcs12-password-file", str(secret))[0] == 0
    pkcs12.load_pkcs12((tmp_path / "b" / "svid.p12").read_bytes(), b"from-file")
    code, _, err = run(capsys, *base, "--write", str(tmp_path / "c"), "--pkcs12-password-env", "UNSET_VAR")
    assert code == 2 and "UNSET_VAR" in err  # configuration error


def test_fetch_jwt_prints_the_token(dev_agent: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "fetch", "jwt", "--address", dev_agent.address, "--audience", "db")
    assert code == 0
    token = out.strip()
    spiffe_id, _claims = dev_agent.validate_jwt_svid(token, "db")
    assert spiffe_id == "spiffe://example.org/workload"
    assert "spiffe_id: spiffe://example.org/workload" in err and token not in err


@pytest.mark.dev_agent(federate_with=["partner.test"])
def test_fetch_jwt_writes_token_and_bundles(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "fetch",
        "jwt",
        "--address",
        dev_agent.address,
        "--audience",
        "db",
        "--audience",
        "cache",
        "--bundles",
        "--write",
        str(tmp_path),
    )
    assert code == 0, err
    no_key_material(out + err)
    token = (tmp_path / "jwt_svid.token").read_text()
    dev_agent.validate_jwt_svid(token, "cache")
    assert oct((tmp_path / "jwt_svid.token").stat().st_mode & 0o777) == oct(0o600)
    assert set(json.loads((tmp_path / "jwt_bundle.json").read_bytes())) == {"example.org", "partner.test"}
    assert (tmp_path / "jwks" / "partner.test.json").is_file()


def test_errors_exit_with_runs_codes_and_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dev_agent: Any
) -> None:
    code, _, err = run(
        capsys, "fetch", "x509", "--address", f"unix://{tmp_path}/none.sock", "--timeout", "500ms"
    )
    assert code == 3 and "error" in err  # unavailable
    code, _, err = run(capsys, "fetch", "x509", "--address", dev_agent.address, "--hint", "nope")
    assert code == 4 and "hint='nope'" in err and "example.org" in err  # no identity; lists what exists
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(capsys, "fetch", "x509", "--address", dev_agent.address, "--write", str(blocker / "x"))
    assert code == 5 and str(blocker) in err  # write error
    code, _, err = run(capsys, "fetch", "x509", "--address", "relative.sock")
    assert code == 2 and "not absolute" in err  # configuration error


def test_denied_identity_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str], dev_agent: Any) -> None:
    dev_agent.deny()
    code, _, err = run(capsys, "fetch", "x509", "--address", dev_agent.address, "--timeout", "1s")
    assert code == 4 and "registration entry" in err


@pytest.mark.parametrize("command", ["fetch", "run one-shot"])
def test_a_socket_that_cannot_be_opened_fails_at_once(tmp_path: Path, command: str) -> None:
    """EACCES on the socket is reported at once, not after the timeout as "is the agent running?"."""
    import socket
    import subprocess
    import sys
    import time

    require(os.geteuid() == 0, "needs root to give a socket away")
    # Another user's private socket; the command runs as root without CAP_DAC_OVERRIDE, so the
    # kernel refuses it as it would refuse any other user (Python itself lives under /root).
    sock_dir = tmp_path / "private"
    sock_dir.mkdir(mode=0o700)
    path = sock_dir / "agent.sock"
    if command == "fetch":
        argv = ["fetch", "x509", "--address", f"unix://{path}", "--timeout", "60s"]
    else:
        conf = tmp_path / "helper.conf"
        conf.write_text(
            f'agent_address = "unix://{path}"\ncert_dir = "{tmp_path / "certs"}"\n'
            'svid_file_name = "s.pem"\nsvid_key_file_name = "k.pem"\nsvid_bundle_file_name = "b.pem"\n'
            'daemon_mode = false\none_shot_timeout = "60s"\n'
        )
        argv = ["run", "-config", str(conf)]
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        os.chown(sock_dir, 65534, 65534)
        started = time.monotonic()
        done = subprocess.run(
            ["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-m", "spiffe_bridge",
             *argv],
            capture_output=True, text=True, timeout=55,
        )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "permission denied" in done.stderr and "uid 0" in done.stderr
    assert time.monotonic() - started < 30  # far below the 60 s timeout: it did not wait


def test_timeout_takes_units(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fetch", "x509", "--timeout", "soon"])
    assert exit_info.value.code == 2 and "invalid duration" in capsys.readouterr().err


def test_jwt_json_goes_to_stdout(capsys: pytest.CaptureFixture[str], dev_agent: Any) -> None:
    code, out, _ = run(capsys, "fetch", "jwt", "--address", dev_agent.address, "--audience", "a", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["audience"] == ["a"] and summary["token"].count(".") == 2


def test_linkerd_env_prints_or_writes(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "linkerd-env", "--address", dev_agent.address, "--server-name", "web.local")
    assert code == 0
    assert f'LINKERD2_PROXY_IDENTITY_SPIRE_WORKLOAD_API_ADDRESS="{dev_agent.address}"' in out
    assert 'LINKERD2_PROXY_IDENTITY_SERVER_ID="spiffe://example.org/workload"' in out
    args = [
        "linkerd-env",
        "--address",
        dev_agent.address,
        "--server-name",
        "web.local",
        "--write",
        str(tmp_path),
    ]
    code, out, _ = run(capsys, *args, "--workload-api-address", "unix:///run/relay.sock")
    assert code == 0 and "trust_anchors_changed: True" in out
    assert "unix:///run/relay.sock" in (tmp_path / "linkerd.env").read_text()
    code, out, _ = run(capsys, *args, "--workload-api-address", "unix:///run/relay.sock")
    assert "trust_anchors_changed: False" in out and "changed: False" in out
    assert os.path.islink(tmp_path / "trust_anchors.pem")
