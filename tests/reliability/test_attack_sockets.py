"""Attack run (issue #14): who may connect to the sockets that hand out keys, and whose socket is whose.

The attacker is uid 65534 in a child process that drops root after its imports
(root ignores permission bits) and then asks for an SVID with its private key.
Relay and dev agent run under umask 000, the setting that made both sockets
world-connectable before.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator

import pytest
from _support.ci import require

from spiffe_bridge import socketfile
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.relay import Relay

NOBODY = 65534
#: Run as the attacker: imports first (the interpreter lives under /root), then drop to nobody.
ATTACKER = """
import errno, json, os, socket, sys
from spiffe_bridge.client.sync import WorkloadClient
os.setgroups([]); os.setgid(65534); os.setuid(65534)
path = sys.argv[1]
probe = socket.socket(socket.AF_UNIX)
try:
    probe.connect(path)
except OSError as exc:
    print(json.dumps({"connect": errno.errorcode[exc.errno]})); sys.exit(0)
probe.close()
with WorkloadClient("unix://" + path, timeout=10) as client:
    svid = client.fetch_x509_context().default_svid
print(json.dumps({"connect": "ok", "key": bool(svid.private_key)}))
"""


def _root_or_fail() -> None:
    require(os.geteuid() == 0, "needs root to act as uid 65534")


def attack(path: str) -> dict[str, object]:
    """What uid 65534 gets from the socket at ``path``: connect errno name, or the key."""
    done = subprocess.run(
        [sys.executable, "-c", ATTACKER, path], capture_output=True, text=True, timeout=60, check=True
    )
    return dict(json.loads(done.stdout))


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def _as_root() -> None:
    _root_or_fail()


@pytest.fixture
def open_dir(tmp_short: str) -> str:
    """A directory everyone may enter (mkdtemp's is 0700, which would hide any socket mode)."""
    os.chmod(tmp_short, 0o755)
    return tmp_short


def test_relay_socket_and_directory_keep_their_modes_under_umask_000(
    dev_agent: DevAgent, open_dir: str
) -> None:
    path = f"{open_dir}/new/dir/relay.sock"
    with umask(0), Relay(dev_agent.address, "unix://" + path) as relay:
        relay.wait_serving()
        assert _mode(path) == 0o660
        assert _mode(f"{open_dir}/new") == _mode(f"{open_dir}/new/dir") == 0o755
        assert os.listdir(f"{open_dir}/new/dir") == ["relay.sock"]  # no staging directory left
        assert attack(path) == {"connect": "EACCES"}


def test_relay_socket_mode_widens_and_warns(
    dev_agent: DevAgent, open_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = f"{open_dir}/relay.sock"
    with Relay(dev_agent.address, "unix://" + path, socket_mode=0o666) as relay:
        relay.wait_serving()
        assert _mode(path) == 0o666
        assert attack(path) == {"connect": "ok", "key": True}  # the attacker does get in when allowed
    assert any("every local user" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_dev_agent_socket_is_0600_under_umask_000(open_dir: str) -> None:
    path = f"{open_dir}/agent.sock"
    with umask(0), DevAgent(path):
        assert _mode(path) == 0o600
        assert attack(path) == {"connect": "EACCES"}
    with umask(0), DevAgent(path, socket_mode=0o666):
        assert attack(path) == {"connect": "ok", "key": True}


def test_cli_sockets_under_umask_000(dev_agent: DevAgent, open_dir: str) -> None:
    """Both commands, started the way the attack run started them."""
    agent_path, relay_path = f"{open_dir}/cli-agent.sock", f"{open_dir}/run/relay.sock"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "spiffe_bridge"]
    commands = [
        [*cli, "dev-agent", "--socket", agent_path],
        [*cli, "relay", "--upstream", dev_agent.address, "--listen", "unix://" + relay_path],
    ]
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, umask=0, env=env)
        for c in commands
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert "serving" in proc.stdout.readline()
        assert (_mode(agent_path), _mode(relay_path), _mode(f"{open_dir}/run")) == (0o600, 0o660, 0o755)
        assert attack(agent_path) == attack(relay_path) == {"connect": "EACCES"}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


def test_a_socket_is_never_reachable_before_it_has_its_mode(open_dir: str) -> None:
    """Bound under umask 000 it sits in a private directory until ``publish`` gave it its mode."""
    path = f"{open_dir}/staged.sock"
    staged = socketfile.Staged(path)
    server = socket.socket(socket.AF_UNIX)
    try:
        with umask(0), staged.tight_umask():
            server.bind(staged.bind_path)
        server.listen()
        assert _mode(staged.bind_path) == 0o777  # the umask's mode, but...
        assert _mode(os.path.dirname(staged.bind_path)) == 0o700  # ...nobody else can reach it
        assert not os.path.exists(path)
        assert attack(staged.bind_path) == {"connect": "EACCES"}
        staged.publish(0o600)
        assert _mode(path) == 0o600 and not os.path.exists(os.path.dirname(staged.bind_path))
    finally:
        server.close()


def test_a_path_too_long_for_a_private_directory_binds_under_a_tight_umask(open_dir: str) -> None:
    deep = os.path.join(open_dir, "d" * (socketfile.MAX_SOCKET_PATH - len(open_dir) - 4))
    os.mkdir(deep)
    path = os.path.join(deep, "s")  # fits, but deep/.sbXXXXXX/s would not
    staged = socketfile.Staged(path)
    assert staged.bind_path == path
    server = socket.socket(socket.AF_UNIX)
    try:
        with umask(0):
            with staged.tight_umask():
                server.bind(staged.bind_path)
            assert os.umask(0) == 0  # restored
        assert _mode(path) == 0o600
        staged.publish(0o660)
        assert _mode(path) == 0o660
    finally:
        server.close()


def test_dev_agent_refuses_a_live_socket(dev_agent: DevAgent) -> None:
    """Pointed at a served socket (say the real agent's), it fails and the server keeps serving."""
    before = os.stat(dev_agent.socket_path).st_ino
    with pytest.raises(FileExistsError, match="served by another process"):
        DevAgent(dev_agent.socket_path).start()
    assert os.stat(dev_agent.socket_path).st_ino == before
    assert dev_agent.x509_svid_response().svids  # still the same agent's socket
    from spiffe_bridge.client.sync import WorkloadClient

    with WorkloadClient(dev_agent.address, timeout=10) as client:
        assert client.fetch_x509_context().svids


def test_dev_agent_still_replaces_a_stale_socket(open_dir: str) -> None:
    path = f"{open_dir}/stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # left behind as by a crash: nobody listens
    stale.close()
    with DevAgent(path) as agent:
        assert agent.running and stat.S_ISSOCK(os.lstat(path).st_mode)
    assert not os.path.exists(path)
