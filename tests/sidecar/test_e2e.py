"""End to end: ``python -m spiffe_bridge run`` in a subprocess against the dev agent's Unix socket.

The spiffe-helper-style examples in ``examples/sidecar`` run with only their paths
changed; wrapper mode uses a real child that records the signals it receives;
one-shot mode is checked for each exit code.
"""

from __future__ import annotations

import json
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _support.wait import wait_until
from cryptography import x509
from sidecar_helpers import (
    free_port,
    health,
    http_get,
    lines,
    recorder,
    run_once,
    sidecar,
    write_conf,
)

from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.sidecar.config import build, parse_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sidecar"


def example(name: str, extra: str = "", **keys: Any) -> str:
    """An example config with some top-level keys replaced (or added) and extra text appended."""
    text = (EXAMPLES / name).read_text()
    for key, value in keys.items():
        line = f"{key} = {json.dumps(value)}"
        pattern = re.compile(rf"^{key} = .*$", re.MULTILINE)
        text = pattern.sub(lambda _m, line=line: line, text) if pattern.search(text) else f"{text}\n{line}\n"
    return text + "\n" + extra


def certs_of(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def started(record: Path) -> bool:
    return any(line.startswith("started") for line in lines(record))


# -- spiffe-helper style examples ----------------------------------------------------------


def test_example_cert_files_with_health_and_metrics(dev_agent: DevAgent, tmp_path: Path) -> None:
    port = free_port()
    text = example("helper.conf", "metrics { enabled = true }", agent_address=dev_agent.address,
                   cert_dir=str(tmp_path / "certs"))  # fmt: skip
    text = text.replace("bind_port = 8081", f"bind_port = {port}")
    conf = write_conf(tmp_path, text)
    base = f"http://127.0.0.1:{port}"
    with sidecar(["-config", str(conf)], tmp_path) as proc:
        _, body = wait_until(lambda: (r := health(base + "/ready"))[0] == 200 and r, "ready over HTTP")
        assert body["status"] == "OK"
        statuses = body["health"]["file_write_statuses"]
        assert statuses == {"x509_write_status": "written", "jwt_write_status": {}}
        assert body["health"]["streams"]["x509"]["status"] == "ready"
        assert 3500 < body["health"]["seconds_until_expiry"] <= 3600
        assert health(base + "/live")[0] == 200
        certs = tmp_path / "certs"
        assert certs_of(certs / "svid.pem")[0].serial_number == dev_agent.svids[0].serial_number
        assert stat.S_IMODE((certs / "svid_key.pem").stat().st_mode) == 0o600
        assert stat.S_IMODE((certs / "svid_bundle.pem").stat().st_mode) == 0o644
        metrics = http_get(base + "/metrics")[1].decode()
        assert 'spiffe_bridge_rotations_total{kind="x509"} 1.0' in metrics
        assert "spiffe_bridge_svid_expiry_seconds" in metrics
        assert proc.stop() == 0
    assert "PRIVATE KEY" not in proc.log and "BEGIN CERTIFICATE" not in proc.log


@pytest.mark.dev_agent(identities=["spiffe://example.org/api"])
def test_example_jwt(dev_agent: DevAgent, tmp_path: Path) -> None:
    conf = write_conf(tmp_path, example("helper-jwt.conf", agent_address=dev_agent.address, cert_dir="jwt"))
    code, log = run_once(["-config", str(conf), "-daemon-mode=false"], tmp_path)
    assert code == 0, log
    claims = {}
    for name in ("db.token", "vault.token"):
        token = (tmp_path / "jwt" / name).read_text()
        assert token not in log
        claims[name] = dev_agent.validate_jwt_svid(
            token, "vault" if name == "vault.token" else "https://db.example.org"
        )
    assert claims["vault.token"][0] == "spiffe://example.org/api"
    assert claims["vault.token"][1]["aud"] == ["vault", "vault-secondary"]  # extra audiences honoured
    bundle = json.loads((tmp_path / "jwt" / "jwt_bundle.json").read_text())
    assert list(bundle) == ["example.org"]
    assert stat.S_IMODE((tmp_path / "jwt" / "jwt_bundle.json").stat().st_mode) == 0o644


@pytest.mark.dev_agent(federate_with=["partner.org"], intermediate=True)
def test_example_federated(dev_agent: DevAgent, tmp_path: Path) -> None:
    conf = write_conf(
        tmp_path, example("helper-federated.conf", agent_address=dev_agent.address, cert_dir="c")
    )
    code, log = run_once(["--config", str(conf), "--daemon-mode=false"], tmp_path)
    assert code == 0, log
    assert len(certs_of(tmp_path / "c" / "svid.pem")) == 1  # intermediates moved to the bundle
    subjects = {c.subject.rfc4514_string() for c in certs_of(tmp_path / "c" / "svid_bundle.pem")}
    assert any("partner.org" in s for s in subjects) and any("example.org" in s for s in subjects)


def test_example_cmd_with_renew_signal(dev_agent: DevAgent, tmp_path: Path) -> None:
    script, record = recorder(tmp_path), tmp_path / "rec"
    text = example("helper-cmd.conf", agent_address=dev_agent.address, cert_dir="certs",
                   cmd=sys.executable, cmd_args=f"{script} {record}")  # fmt: skip
    conf = write_conf(tmp_path, text)
    env = {"RECORDER_CHECK": str(tmp_path / "certs" / "svid_key.pem")}
    with sidecar(["-config", str(conf)], tmp_path, env) as proc:
        wait_until(lambda: started(record), "cmd started")
        assert "file present" in lines(record)  # started only after the files were written
        dev_agent.rotate()
        wait_until(lambda: "signal SIGUSR1" in lines(record), "renew_signal after rotation")
        proc.signal(signal.SIGINT)
        assert proc.wait() == 0
    assert "signal SIGTERM" in lines(record)  # the managed child is stopped on exit


def test_example_pid_file(dev_agent: DevAgent, tmp_path: Path) -> None:
    script, record, pidfile = recorder(tmp_path), tmp_path / "rec", tmp_path / "nginx.pid"
    text = example("helper-pidfile.conf", agent_address=dev_agent.address, cert_dir="certs",
                   pid_file_name=str(pidfile))  # fmt: skip
    conf = write_conf(tmp_path, text)
    child = subprocess.Popen([sys.executable, str(script), str(record), str(pidfile)])
    try:
        wait_until(lambda: started(record), "consumer started")
        with sidecar(["-config", str(conf)], tmp_path) as proc:
            wait_until(lambda: lines(record).count("signal SIGHUP") == 1, "SIGHUP after the first write")
            dev_agent.rotate()
            wait_until(lambda: lines(record).count("signal SIGHUP") == 2, "SIGHUP after rotation")
            assert proc.stop() == 0
        assert child.poll() is None  # a PID-file consumer is not ours to stop
    finally:
        child.kill()
        child.wait()


def test_example_oneshot_waits_for_a_late_socket(dev_agent: DevAgent, tmp_path: Path) -> None:
    dev_agent.stop()
    text = example(
        "helper-oneshot.conf", agent_address=dev_agent.address, cert_dir="out", one_shot_timeout="20s"
    )
    conf = write_conf(tmp_path, text)
    with sidecar(["-config", str(conf)], tmp_path) as proc:
        dev_agent.start()
        assert proc.wait() == 0, proc.log
    assert (tmp_path / "out" / "svid.pem").exists() and (tmp_path / "out" / "jwt_svid.token").exists()


def test_example_toml_outputs(dev_agent: DevAgent, tmp_path: Path) -> None:
    text = example("spiffe-bridge.toml", agent_address=dev_agent.address, cert_dir="certs")
    text = text.replace("/etc/haproxy/spiffe", str(tmp_path / "haproxy")).replace("/etc/envoy/sds", "envoy")
    conf = write_conf(tmp_path, text, "spiffe-bridge.toml")
    code, log = run_once(["-config", str(conf), "-daemon-mode=false"], tmp_path)
    assert code == 0, log
    assert (tmp_path / "certs" / "..data").is_symlink()  # layout = "symlink"
    assert b"PRIVATE KEY" in (tmp_path / "haproxy" / "svid_combined.pem").read_bytes()
    assert list((tmp_path / "envoy").glob("*.json"))
    assert "reload_command" in log and "ignored" in log  # one-shot warns about daemon-only keys


def test_kubernetes_example_config_is_valid() -> None:
    yaml_text = (EXAMPLES / "kubernetes-nginx.yaml").read_text()
    block = yaml_text.split("helper.conf: |\n", 1)[1].split("  nginx.conf: |", 1)[0]
    conf = "\n".join(line[4:] for line in block.splitlines())
    config = build(parse_text(conf, "hcl"), environ={})
    assert config.layout == "symlink" and config.health.bind_address == "0.0.0.0"
    assert "restartPolicy: Always" in yaml_text and "csi.spiffe.io" in yaml_text


# -- wrapper mode ------------------------------------------------------------------------------


def minimal(agent: DevAgent, extra: str = "") -> str:
    return (
        f'agent_address = "{agent.address}"\ncert_dir = "certs"\nsvid_file_name = "svid.pem"\n'
        f'svid_key_file_name = "svid_key.pem"\nsvid_bundle_file_name = "svid_bundle.pem"\n{extra}'
    )


def test_wrapper_forwards_signals_and_propagates_exit_code(dev_agent: DevAgent, tmp_path: Path) -> None:
    script, record = recorder(tmp_path), tmp_path / "rec"
    conf = write_conf(tmp_path, minimal(dev_agent, 'renew_signal = "SIGUSR1"'))
    env = {"RECORDER_CHECK": str(tmp_path / "certs" / "svid.pem")}
    with sidecar(
        ["-config", str(conf), "--", sys.executable, str(script), str(record)], tmp_path, env
    ) as proc:
        wait_until(lambda: started(record), "wrapped program started")
        assert "file present" in lines(record)
        dev_agent.rotate()
        wait_until(lambda: "signal SIGUSR1" in lines(record), "renew signal on rotation")
        proc.signal(signal.SIGHUP)
        wait_until(lambda: "signal SIGHUP" in lines(record), "forwarded SIGHUP")
        assert proc.proc.poll() is None  # SIGHUP does not stop the wrapper
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 7  # the child's exit code
    assert lines(record)[-1] == "signal SIGTERM"


def test_wrapper_exits_when_the_child_does(dev_agent: DevAgent, tmp_path: Path) -> None:
    script, record = recorder(tmp_path), tmp_path / "rec"
    conf = write_conf(tmp_path, minimal(dev_agent))
    code, log = run_once(["-config", str(conf), "--", sys.executable, str(script), str(record)], tmp_path,
                         {"RECORDER_EXIT_NOW": "3"})  # fmt: skip
    assert code == 3, log
    assert started(record)


def test_wrapper_config_conflicts_are_config_errors(dev_agent: DevAgent, tmp_path: Path) -> None:
    conf = write_conf(tmp_path, minimal(dev_agent, 'cmd = "true"'))
    code, log = run_once(["-config", str(conf), "--", "true"], tmp_path)
    assert code == 2 and "cannot be used together" in log


# -- one-shot exit codes ---------------------------------------------------------------------


def test_oneshot_2_bad_config(tmp_path: Path) -> None:
    write_conf(
        tmp_path, 'svid_file_name = "a"\nsvid_key_file_name = "b"\nsvid_bundle_file_name = "c"\n\nbogus = 1\n'
    )
    code, log = run_once(["-daemon-mode=false"], tmp_path)  # default config file: ./helper.conf
    assert code == 2
    assert "unknown key 'bogus' (line 5)" in log


def test_oneshot_3_socket_never_appears(tmp_path: Path) -> None:
    text = minimal(DevAgent(str(tmp_path / "none.sock")), 'daemon_mode = false\none_shot_timeout = "1s"')
    code, log = run_once(["-config", str(write_conf(tmp_path, text))], tmp_path)
    assert code == 3, log
    assert "did not answer within 1s" in log


@pytest.mark.parametrize("kind", ["x509", "jwt"])
def test_oneshot_4_no_identity_until_deadline(dev_agent: DevAgent, tmp_path: Path, kind: str) -> None:
    dev_agent.deny()
    if kind == "x509":
        text = minimal(dev_agent, 'daemon_mode = false\none_shot_timeout = "1.5s"')
    else:
        text = (
            f'agent_address = "{dev_agent.address}"\ndaemon_mode = false\none_shot_timeout = "1.5s"\n'
            'jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "a.jwt"}]\n'
        )
    code, log = run_once(["-config", str(write_conf(tmp_path, text))], tmp_path)
    assert code == 4, log
    assert "no identity issued" in log or "PERMISSION_DENIED" in log


def test_oneshot_5_unwritable_directory(dev_agent: DevAgent, tmp_path: Path) -> None:
    (tmp_path / "certs").write_text("not a directory")
    conf = write_conf(tmp_path, minimal(dev_agent, "daemon_mode = false"))
    code, log = run_once(["-config", str(conf)], tmp_path)
    assert code == 5, log
    assert "writing the files failed" in log


def test_oneshot_interrupted_while_waiting(tmp_path: Path) -> None:
    text = minimal(DevAgent(str(tmp_path / "none.sock")), 'daemon_mode = false\none_shot_timeout = "30s"')
    with sidecar(["-config", str(write_conf(tmp_path, text))], tmp_path) as proc:
        wait_until(lambda: "one-shot: waiting up to 30s" in proc.log, "one-shot waiting")
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM" in proc.log
