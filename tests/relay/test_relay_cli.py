"""``spiffe-bridge relay`` as a process: serves, filters, mode, exits cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator

import pytest
from relay_helpers import RelayFactory

from spiffe_bridge.client.sync import WorkloadClient
from spiffe_bridge.devagent.server import DevAgent

WEB = "spiffe://example.org/web"
DB = "spiffe://example.org/db"


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "spiffe_bridge", "relay", *args]


@pytest.fixture
def socket_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = f"/tmp/sbr-cli-{os.getpid()}-{tmp_path_factory.mktemp('c').name}"
    yield directory
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.dev_agent(identities=[f"{WEB}#web", f"{DB}#db"])
def test_serves_filtered_until_signal(dev_agent: DevAgent, socket_dir: str, signum: signal.Signals) -> None:
    listen = f"unix://{socket_dir}/relay.sock"
    args = [
        "--upstream",
        dev_agent.address,
        "--listen",
        listen,
        "--allow-hint",
        "db",
        "--socket-mode",
        "0640",
    ]
    proc = subprocess.Popen(_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the socket is served
        assert line.startswith(f"relay serving {listen} from {dev_agent.address}"), line
        assert stat.S_IMODE(os.lstat(f"{socket_dir}/relay.sock").st_mode) == 0o640
        with WorkloadClient(listen) as client:
            assert [str(s.spiffe_id) for s in client.fetch_x509_context().svids] == [DB]
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not os.path.exists(f"{socket_dir}/relay.sock")
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


def test_usage_errors(socket_dir: str) -> None:
    bad = [
        ["--listen", "tcp://127.0.0.1:9"],
        ["--listen", f"unix://{socket_dir}/r.sock", "--allow-spiffe-id", "http://nope"],
    ]
    for args in bad:
        done = subprocess.run(
            _cmd("--upstream", "unix:///tmp/none.sock", *args), capture_output=True, text=True
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("relay: ")
    done = subprocess.run(
        _cmd("--listen", "unix:///x.sock", "--socket-mode", "999"), capture_output=True, text=True
    )
    assert done.returncode == 2 and "octal" in done.stderr
    done = subprocess.run(
        _cmd("--listen", "unix:///x.sock", "--forward-before-verify", "--verify-first"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


def test_help_names_the_fast_path_and_its_trade_off() -> None:
    done = subprocess.run(_cmd("--help"), capture_output=True, text=True, check=True)
    text = " ".join(done.stdout.split())
    assert "--forward-before-verify" in text and "may use invalid material" in text


def test_refuses_a_socket_that_is_in_use(dev_agent: DevAgent, relay_factory: RelayFactory) -> None:
    running = relay_factory(dev_agent.address)
    done = subprocess.run(
        _cmd("--upstream", dev_agent.address, "--listen", running.address),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1, done.stderr
    assert "served by another process" in done.stderr
    with WorkloadClient(running.address) as client:  # the running relay was left alone
        assert client.fetch_x509_context().svids


def test_tells_systemd_when_serving(dev_agent: DevAgent, socket_dir: str) -> None:
    os.makedirs(socket_dir, exist_ok=True)
    notify_path = f"{socket_dir}/notify"
    listen = f"unix://{socket_dir}/relay.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(notify_path)
        systemd.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": notify_path}
        proc = subprocess.Popen(
            _cmd("--upstream", dev_agent.address, "--listen", listen), env=env, stdout=subprocess.DEVNULL
        )
        try:
            assert systemd.recv(64) == b"READY=1"
            assert stat.S_ISSOCK(os.lstat(f"{socket_dir}/relay.sock").st_mode)  # served before READY
            proc.send_signal(signal.SIGTERM)
            assert systemd.recv(64) == b"STOPPING=1"
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
