"""examples/linkerd-vm/systemd: the units work as their real users, as on the VM.

The dev agent stands in for spire-agent (as spire-agent.service's user, in its
RuntimeDirectory); the relay and linkerd-env run the units' own ExecStart lines
with the units' users, groups and directory modes; the proxy's user (as
linkerd-proxy.service would run it) must reach the relay socket and get only its
SVID, and a user outside the socket's group must not connect at all. The interop test
does the same with spire-server and spire-agent running their own units as user spire.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _support.binaries import spire_bin_dir
from _support.wait import wait_until
from unit_runner import Unit, UnitProcess, moved, run_as

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "linkerd-vm"
TD = "root.linkerd.cluster.local"
WORKLOAD = f"spiffe://{TD}/external-workload"
OTHER = f"spiffe://{TD}/other-app"

#: A client that only connects: exit 0 connected, 13 EACCES, 1 anything else.
CONNECT = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "try:\n    s.connect(sys.argv[1])\n"
    "except PermissionError:\n    sys.exit(13)\n"
)


@dataclass
class VM:
    root: Path
    bin: Path
    units: dict[str, Unit]

    @property
    def relay_socket(self) -> Path:
        return self.root / "run" / "spiffe-relay" / "proxy.sock"

    @property
    def agent_socket(self) -> Path:
        return self.root / "run" / "spire" / "agent" / "public" / "api.sock"


def load_units(root: Path, bin_dir: Path) -> dict[str, Unit]:
    """Every unit of the example with its absolute paths moved under ``root``."""
    mapping = [
        ("/opt/spiffe-bridge/bin/spiffe-bridge", f"{bin_dir}/spiffe-bridge"),
        ("/opt/spire", f"{root}/opt/spire"),
        ("/opt/linkerd-proxy", f"{root}/opt/linkerd-proxy"),
        ("/etc/linkerd-proxy", f"{root}/etc/linkerd-proxy"),
        ("/run/", f"{root}/run/"),
    ]
    return {
        p.name: Unit.parse(p.name, moved(p.read_text(), mapping))
        for p in sorted((EXAMPLE / "systemd").glob("*.service"))
    }


@pytest.fixture
def vm(
    scratch: Path, installed_bin: Path, system_users: list[str], request: pytest.FixtureRequest
) -> Iterator[VM]:
    root = scratch / f"vm-{request.node.name[:20]}"
    (root / "run").mkdir(parents=True, mode=0o755)
    root.chmod(0o755)
    yield VM(root, installed_bin, load_units(root, installed_bin))


@pytest.fixture
def running(vm: VM) -> Iterator[tuple[VM, dict[str, UnitProcess]]]:
    """spire-agent (the dev agent in its place), spiffe-relay and linkerd-identity, all ready."""
    procs: dict[str, UnitProcess] = {}
    try:
        agent_unit = vm.units["spire-agent.service"]
        procs["agent"] = UnitProcess(
            agent_unit,
            vm.root / "run",
            vm.root / "agent.log",
            argv=[
                str(vm.bin / "spiffe-bridge"),
                "dev-agent",
                "--socket",
                str(vm.agent_socket),
                "--socket-mode",  # open to every local user like SPIRE's public socket: it attests callers
                "0777",
                "--trust-domain",
                TD,
                "--spiffe-id",
                OTHER,
                "--spiffe-id",
                WORKLOAD,
            ],
        )
        _wait_served(vm.agent_socket, procs["agent"])
        for name in ("spiffe-relay.service", "linkerd-identity.service"):
            procs[name] = UnitProcess(vm.units[name], vm.root / "run", vm.root / f"{name}.log")
            procs[name].wait_ready()
        yield vm, procs
    finally:
        for proc in reversed(procs.values()):
            proc.stop()


def _wait_served(path: Path, proc: UnitProcess) -> None:
    """The dev agent has no READY=1: poll, with a deadline, until its socket accepts connections."""

    def served() -> bool:
        assert proc.proc.poll() is None, proc.output()
        return subprocess.run([sys.executable, "-c", CONNECT, str(path)], check=False).returncode == 0

    wait_until(served, f"the stand-in agent on {path}", 20.0)


def test_relay_socket_belongs_to_the_proxy_group(running: tuple[VM, dict[str, UnitProcess]]) -> None:
    vm, _ = running
    st = vm.relay_socket.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert pwd.getpwuid(st.st_uid).pw_name == "spiffe-relay"
    assert grp.getgrgid(st.st_gid).gr_name == "linkerd-proxy"


def test_proxy_user_gets_only_its_svid_through_the_relay(running: tuple[VM, dict[str, UnitProcess]]) -> None:
    vm, _ = running
    proxy = vm.units["linkerd-proxy.service"]
    assert proxy.user == "linkerd-proxy"
    done = run_as(
        proxy,
        [str(vm.bin / "spiffe-bridge"), "fetch", "x509", "--address", f"unix://{vm.relay_socket}", "--json"],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["svids"] == [WORKLOAD]


def test_a_user_outside_the_socket_group_cannot_connect(running: tuple[VM, dict[str, UnitProcess]]) -> None:
    vm, _ = running
    outsider = Unit.parse("outsider", "[Service]\nUser=nobody\nGroup=nogroup\n")
    done = run_as(outsider, [str(vm.bin / "python"), "-c", CONNECT, str(vm.relay_socket)])
    assert done.returncode == 13, done.stdout + done.stderr
    # the proxy's credentials connect through the same path: the refusal is the socket's group
    done = run_as(
        vm.units["linkerd-proxy.service"], [str(vm.bin / "python"), "-c", CONNECT, str(vm.relay_socket)]
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_identity_env_file_points_the_proxy_at_the_relay(running: tuple[VM, dict[str, UnitProcess]]) -> None:
    vm, _ = running
    env_file = vm.root / "run" / "linkerd-identity" / "linkerd.env"
    names = ("LINKERD2_PROXY_IDENTITY_SERVER_ID", "LINKERD2_PROXY_IDENTITY_SPIRE_SOCKET")
    script = 'set -a; . "$1"; printf "%s\\n"' + "".join(f' "${n}"' for n in names)
    values = subprocess.run(
        ["bash", "-c", script, "_", str(env_file)], capture_output=True, text=True, check=True
    )
    assert values.stdout.splitlines() == [WORKLOAD, f"unix://{vm.relay_socket}"]


# --------------------------------------------------------------------------
# with real SPIRE: spire-server and spire-agent run their own units' ExecStart as user spire


def _lay_out_spire(vm: VM, spire_bin: Path) -> None:
    """What install.sh does for SPIRE, under the VM's root; a stand-in Linkerd anchor made with openssl."""
    opt = vm.root / "opt" / "spire"
    spire = pwd.getpwnam("spire")
    port = _free_port()
    mapping = [("/opt/spire", str(opt)), ("/run/", f"{vm.root}/run/"), ('"8081"', f'"{port}"')]
    for sub in ("data/server", "data/agent"):
        (opt / sub).mkdir(parents=True)
        os.chown(opt / sub, spire.pw_uid, spire.pw_gid)
        (opt / sub).chmod(0o750)
    for sub in ("conf", "bin", "certs"):
        (opt / sub).mkdir(parents=True, exist_ok=True)
    for path in (opt, opt / "data"):
        path.chmod(0o755)
    for name in ("server.conf", "agent.conf"):
        (opt / "conf" / name).write_text(moved((EXAMPLE / "spire" / name).read_text(), mapping))
    for name in ("agent-start.sh", "register.sh"):
        (opt / "bin" / name).write_text(moved((EXAMPLE / "spire" / name).read_text(), mapping))
        (opt / "bin" / name).chmod(0o755)
    for name in ("spire-server", "spire-agent"):  # the cached build may sit under a 0700 home
        try:
            os.link(spire_bin / name, opt / "bin" / name)
        except OSError:
            shutil.copy2(spire_bin / name, opt / "bin" / name)
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "2", "-subj", f"/CN={TD}", "-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
            *("-keyout", str(opt / "certs" / "ca.key"), "-out", str(opt / "certs" / "ca.crt")),
        ],
        check=True,
        capture_output=True,
    )
    os.chown(opt / "certs" / "ca.key", spire.pw_uid, spire.pw_gid)
    (opt / "certs" / "ca.key").chmod(0o600)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(binary: Path, sock: Path, proc: UnitProcess) -> Callable[[], bool]:
    def check() -> bool:
        assert proc.proc.poll() is None, proc.output()
        return (
            subprocess.run(
                [str(binary), "healthcheck", "-socketPath", str(sock)], capture_output=True
            ).returncode
            == 0
        )

    return check


@pytest.mark.interop
def test_units_with_real_spire(vm: VM) -> None:
    spire_bin = spire_bin_dir()
    _lay_out_spire(vm, spire_bin)
    opt = vm.root / "opt" / "spire"
    procs: dict[str, UnitProcess] = {}
    try:
        procs["server"] = UnitProcess(
            vm.units["spire-server.service"], vm.root / "run", vm.root / "server.log"
        )
        server_socket = vm.root / "run" / "spire" / "server" / "private" / "api.sock"
        wait_until(_healthy(opt / "bin" / "spire-server", server_socket, procs["server"]), "spire-server", 60)
        registered = subprocess.run([str(opt / "bin" / "register.sh")], capture_output=True, text=True)
        assert registered.returncode == 0, registered.stdout + registered.stderr
        assert pwd.getpwuid((opt / "join-token").stat().st_uid).pw_name == "spire"

        procs["agent"] = UnitProcess(vm.units["spire-agent.service"], vm.root / "run", vm.root / "agent.log")
        wait_until(_healthy(opt / "bin" / "spire-agent", vm.agent_socket, procs["agent"]), "spire-agent", 60)
        for name in ("spiffe-relay.service", "linkerd-identity.service"):
            procs[name] = UnitProcess(vm.units[name], vm.root / "run", vm.root / f"{name}.log")
            procs[name].wait_ready(timeout=60)

        done = run_as(
            vm.units["linkerd-proxy.service"],
            [
                str(vm.bin / "spiffe-bridge"),
                "fetch",
                "x509",
                "--address",
                f"unix://{vm.relay_socket}",
                "--json",
            ],
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["svids"] == [WORKLOAD]
        env_file = vm.root / "run" / "linkerd-identity" / "linkerd.env"
        anchors = subprocess.run(
            [
                "bash",
                "-c",
                'set -a; . "$1"; printf %s "$LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"',
                "_",
                str(env_file),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert anchors == (opt / "certs" / "ca.crt").read_text()
    finally:
        for proc in reversed(procs.values()):
            proc.stop()
