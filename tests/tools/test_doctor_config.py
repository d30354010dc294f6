"""``spiffe-bridge doctor -config``: the checks of what a sidecar configuration points at,
each on a good and on a broken setup (files written by our writers, real ports, real processes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from tools_helpers import NOBODY, cli_as, need_root, run, write_format

from spiffe_bridge.doctor.files import filesystem_of


def write_config(tmp_path: Path, agent: Any, **keys: Any) -> str:
    cert_dir = keys.pop("cert_dir", str(tmp_path / "certs"))
    doc = {
        "agent_address": agent.address,
        "cert_dir": cert_dir,
        "svid_file_name": "svid.pem",
        "svid_key_file_name": "svid_key.pem",
        "svid_bundle_file_name": "svid_bundle.pem",
        **keys,
    }
    path = tmp_path / "helper.json"
    path.write_text(json.dumps(doc))
    return str(path)


def doctor(capsys: pytest.CaptureFixture[str], config: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run(capsys, "doctor", "-config", config, "--json", "--timeout", "5")
    assert out, err
    return code, {c["check"]: c for c in json.loads(out)["checks"]}


def one(checks: dict[str, Any], prefix: str) -> dict[str, Any]:
    (match,) = [c for name, c in checks.items() if name.startswith(prefix)]
    return match


def test_good_config_passes_everything(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "certs").mkdir()
    pid = tmp_path / "app.pid"
    pid.write_text(f"{os.getpid()}\n")
    config = write_config(tmp_path, dev_agent, cmd="/bin/true", pid_file_name=str(pid), renew_signal="SIGHUP")
    code, checks = doctor(capsys, config)
    assert code == 0, [c for c in checks.values() if not c["ok"]]
    assert {"identity issued", "cmd", "pid_file_name", "health port"} <= set(checks)
    cert_dir = one(checks, "cert_dir")
    assert "writable; " in cert_dir["detail"] and "root:root 0755" in cert_dir["detail"]


def test_cert_dir_filesystem_is_the_mounts(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    findmnt = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE,TARGET", "--target", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    fstype, target = findmnt.stdout.split()
    assert filesystem_of(str(tmp_path)) == f"{fstype} on {target}"


def test_cert_dir_missing_but_creatable(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, checks = doctor(capsys, write_config(tmp_path, dev_agent, cert_dir=str(tmp_path / "a" / "b")))
    assert code == 0
    assert one(checks, "cert_dir")["detail"].startswith(
        f"does not exist yet; the sidecar creates it under {tmp_path}"
    )


@pytest.mark.dev_agent(socket_mode=0o666)  # nobody must reach the agent
def test_cert_dir_missing_and_not_creatable(dev_agent: Any) -> None:
    need_root()
    os.chmod(os.path.dirname(dev_agent.socket_path), 0o755)
    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        base = Path(top)
        os.chmod(base, 0o755)
        config = write_config(base, dev_agent)  # cert_dir base/certs does not exist; base is root's 0755
        os.chmod(config, 0o644)
        result = cli_as(NOBODY, "doctor", "-config", config)
    assert result.returncode == 1, result.stderr
    assert f"does not exist and uid {NOBODY} cannot create it in {base} (EACCES)" in result.stdout
    assert f"fix: mkdir -p {base / 'certs'}" in result.stdout


def test_cert_dir_world_writable(dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "certs").mkdir()
    os.chmod(tmp_path / "certs", 0o777)
    code, checks = doctor(capsys, write_config(tmp_path, dev_agent))
    assert code == 1 and "world-writable without the sticky bit" in one(checks, "cert_dir")["detail"]


@pytest.mark.dev_agent(socket_mode=0o666)  # nobody must reach the agent
def test_cert_dir_not_writable_by_the_user(dev_agent: Any) -> None:
    need_root()
    os.chmod(os.path.dirname(dev_agent.socket_path), 0o755)
    with tempfile.TemporaryDirectory(
        dir="/tmp"
    ) as top:  # pytest's tmp root is 0700: nobody could not enter it
        base = Path(top)
        os.chmod(base, 0o755)
        (base / "certs").mkdir(mode=0o755)
        config = write_config(base, dev_agent)
        os.chmod(config, 0o644)
        result = cli_as(NOBODY, "doctor", "-config", config)
    assert result.returncode == 1, result.stderr
    assert f"cert_dir {base / 'certs'}: not writable by uid {NOBODY} (EACCES" in result.stdout
    assert "PASS identity issued" in result.stdout


def test_cmd_not_found(dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "certs").mkdir()
    code, checks = doctor(capsys, write_config(tmp_path, dev_agent, cmd="no-such-program-spiffe"))
    assert code == 1 and checks["cmd"]["detail"] == "'no-such-program-spiffe' not found in $PATH"
    code, checks = doctor(capsys, write_config(tmp_path, dev_agent, cmd=str(tmp_path / "helper.json")))
    assert code == 1 and "not executable or missing" in checks["cmd"]["detail"]


def test_pid_file_missing_garbage_and_stale(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "certs").mkdir()
    pid = tmp_path / "app.pid"
    config = write_config(tmp_path, dev_agent, pid_file_name=str(pid), renew_signal="SIGHUP")
    code, checks = doctor(capsys, config)
    assert code == 1 and "No such file" in checks["pid_file_name"]["detail"]
    pid.write_text("nginx\n")
    code, checks = doctor(capsys, config)
    assert code == 1 and "does not hold a process id" in checks["pid_file_name"]["detail"]
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: its pid names no process now
    pid.write_text(str(child.pid))
    code, checks = doctor(capsys, config)
    assert code == 1 and f"process {child.pid} is not running" in checks["pid_file_name"]["detail"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_health_port_free_and_taken(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "certs").mkdir()
    port = _free_port()
    config = write_config(tmp_path, dev_agent, health_checks={"listener_enabled": True, "bind_port": port})
    code, checks = doctor(capsys, config)
    assert code == 0 and checks[f"health port 127.0.0.1:{port}"]["detail"] == "free"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        code, checks = doctor(capsys, config)
    assert code == 1 and "EADDRINUSE" in checks[f"health port 127.0.0.1:{port}"]["detail"]


def test_configured_hint_missing_lists_what_exists(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "certs").mkdir()
    code, checks = doctor(capsys, write_config(tmp_path, dev_agent, hint="nope"))
    assert code == 1
    assert "the agent serves: spiffe://example.org/workload (hint '')" in checks["hint / SPIFFE ID"]["detail"]


def linkerd_config(tmp_path: Path, agent: Any) -> tuple[str, Path]:
    out = tmp_path / "linkerd"
    (tmp_path / "certs").mkdir(exist_ok=True)
    outputs = [{"format": "linkerd", "dir": str(out), "linkerd_server_name": "web.local"}]
    return write_config(tmp_path, agent, outputs=outputs), out


def test_linkerd_server_id_chains_to_trust_anchors(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, out = linkerd_config(tmp_path, dev_agent)
    code, checks = doctor(capsys, config)
    assert code == 1 and "run the sidecar once" in one(checks, "linkerd")["fix"]
    write_format(dev_agent, out, "linkerd")
    code, checks = doctor(capsys, config)
    assert code == 0, one(checks, "linkerd")
    assert one(checks, "linkerd")["detail"].endswith("chains to LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS")
    dev_agent.rotate_x509_bundle(keep_previous=False)  # new roots; the env file still has the old ones
    code, checks = doctor(capsys, config)
    linkerd = one(checks, "linkerd")
    assert code == 1 and "does not chain to LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS" in linkerd["detail"]
    assert "restart the proxy" in linkerd["fix"]


def test_linkerd_server_id_not_served(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, out = linkerd_config(tmp_path, dev_agent)
    write_format(dev_agent, out, "linkerd")
    dev_agent.set_identities(["spiffe://example.org/other"])
    code, checks = doctor(capsys, config)
    detail = one(checks, "linkerd")["detail"]
    assert code == 1 and "'spiffe://example.org/workload' is not an SVID the agent serves" in detail


def envoy_config(tmp_path: Path, agent: Any, **options: str) -> tuple[str, Path]:
    out = tmp_path / "envoy"
    (tmp_path / "certs").mkdir(exist_ok=True)
    return write_config(tmp_path, agent, outputs=[{"format": "envoy-sds", "dir": str(out), **options}]), out


def test_envoy_secret_names_consistent(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, out = envoy_config(tmp_path, dev_agent)
    write_format(dev_agent, out, "envoy-sds")
    code, checks = doctor(capsys, config)
    assert code == 0
    assert "sds_tls_certificate.json=default" in one(checks, "envoy-sds")["detail"]


def test_envoy_secret_name_differs_from_the_files(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, out = envoy_config(tmp_path, dev_agent, envoy_certificate_secret_name="spiffe-web")
    write_format(dev_agent, out, "envoy-sds")  # written with the default names
    code, checks = doctor(capsys, config)
    detail = one(checks, "envoy-sds")["detail"]
    assert code == 1 and "holds secret 'default', the configuration says 'spiffe-web'" in detail


def test_envoy_secret_names_collide(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = envoy_config(tmp_path, dev_agent, envoy_bundle_secret_name="default")
    code, checks = doctor(capsys, config)
    assert code == 1 and "secret names are not distinct" in one(checks, "envoy-sds")["detail"]


def test_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "helper.conf"
    path.write_text('agent_address = "/tmp/x.sock"\ncert_dirr = "/tmp"\n')
    code, _, err = run(capsys, "doctor", "-config", str(path))
    assert code == 2 and "cert_dirr" in err


def test_reload_command_resolves_or_not(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "certs").mkdir()
    code, checks = doctor(capsys, write_config(tmp_path, dev_agent, reload_command=["true", "--reload"]))
    assert code == 0 and checks["reload_command"]["detail"].startswith("true -> /")
    code, checks = doctor(capsys, write_config(tmp_path, dev_agent, reload_command=["no-such-reloader"]))
    assert code == 1 and "not found in $PATH" in checks["reload_command"]["detail"]


def test_per_output_hint(dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spiffe_bridge.devagent.identity import Identity

    dev_agent.set_identities(
        [Identity("spiffe://example.org/web", hint="web"), Identity("spiffe://example.org/db", hint="db")]
    )
    (tmp_path / "certs").mkdir()
    out = str(tmp_path / "db")
    code, checks = doctor(
        capsys, write_config(tmp_path, dev_agent, outputs=[{"format": "pem", "dir": out, "hint": "db"}])
    )
    assert (
        code == 0 and one(checks, "pem output")["detail"] == "spiffe://example.org/db (hint 'db') is served"
    )
    code, checks = doctor(
        capsys, write_config(tmp_path, dev_agent, outputs=[{"format": "pem", "dir": out, "hint": "cache"}])
    )
    assert code == 1 and "no SVID with hint='cache'" in one(checks, "pem output")["detail"]


def test_unparsable_address(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "doctor", "--address", "bogus://x")
    assert code == 1 and out.startswith("FAIL address: ")
