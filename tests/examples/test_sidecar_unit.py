"""examples/sidecar/spiffe-bridge.service: installed as its header says, run as its user and group.

The header's install steps run (paths moved under a scratch root), then the unit's
ExecStart runs as ``spiffe-bridge:www-data`` (Debian's nginx group) with the unit's
capabilities, against a dev agent standing in for the SPIRE agent. READY=1 must come
with the files in place, nginx's group must be able to read the certificate (not the
key), and a rotation must reach the root-owned "nginx master" through its pid file
(the unit's CAP_KILL), as it would reach nginx.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import shlex
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _support.wait import wait_until
from unit_runner import Unit, UnitProcess, moved, run_as

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "sidecar"
UNIT = EXAMPLE / "spiffe-bridge.service"

#: Stands in for nginx's master: root; on each SIGHUP records the hash of the certificate it
#: would load then (so a signal sent before the new file is in place shows up as the old hash).
MASTER = (
    "import hashlib, signal, sys\n"
    "out = open(sys.argv[1], 'a', buffering=1)\n"
    "def hup(*_):\n"
    "    out.write(hashlib.sha256(open(sys.argv[2], 'rb').read()).hexdigest() + '\\n')\n"
    "signal.signal(signal.SIGHUP, hup)\n"
    "print('ready', flush=True)\n"
    "while True:\n    signal.pause()\n"
)


@dataclass
class Installed:
    root: Path
    bin: Path
    unit: Unit
    mapping: list[tuple[str, str]]

    @property
    def cert_dir(self) -> Path:
        return self.root / "etc" / "nginx" / "spiffe"


def header_commands(text: str) -> list[str]:
    """The indented shell commands in the unit's leading comment."""
    header = text.split("[Unit]", 1)[0]
    return [m.group(1) for m in re.finditer(r"^#   (\S.*)$", header, re.MULTILINE)]


@pytest.fixture
def installed(scratch: Path, installed_bin: Path, system_users: list[str]) -> Installed:
    root = scratch / "sidecar"
    root.mkdir(mode=0o755)
    mapping = [
        ("/usr/local/bin/spiffe-bridge", f"{installed_bin}/spiffe-bridge"),
        ("/etc/", f"{root}/etc/"),
        ("/run/", f"{root}/run/"),
    ]
    (root / "etc" / "systemd" / "system").mkdir(parents=True)  # there on any systemd host
    (root / "run").mkdir(mode=0o755)
    unit = Unit.parse(UNIT.name, moved(UNIT.read_text(), mapping))
    for command in header_commands(UNIT.read_text()):
        argv = shlex.split(command)
        if argv[0] == "useradd":
            assert argv[-1] == unit.user  # the fixture made it, with the same options
            continue
        if argv[0] == "systemctl":
            continue
        assert argv[0] == "install", command
        done = subprocess.run(
            shlex.split(moved(command, mapping)), cwd=EXAMPLE, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{command}: {done.stderr}"
    config = Path(f"{root}/etc/spiffe-bridge/helper.conf")
    config.write_text(moved(config.read_text(), mapping))
    return Installed(root, installed_bin, unit, mapping)


@pytest.fixture
def agent(installed: Installed) -> Iterator[subprocess.Popen[bytes]]:
    """The dev agent where the config's agent_address points (root, as a SPIRE agent usually runs)."""
    socket_path = installed.root / "run" / "spire" / "sockets" / "agent.sock"
    socket_path.parent.mkdir(parents=True, mode=0o755)
    os.chmod(socket_path.parent.parent, 0o755)
    proc = subprocess.Popen(
        # open to every local user like SPIRE's public socket (the dev agent's own default is 0600)
        [
            str(installed.bin / "spiffe-bridge"),
            "dev-agent",
            "--socket",
            str(socket_path),
            "--socket-mode",
            "0777",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline().decode()]  # "serving ..." once it serves (after the mode warning)
    while "serving" not in lines[-1] and lines[-1]:
        lines.append(proc.stdout.readline().decode())
    assert "serving" in lines[-1], lines
    yield proc
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def master(installed: Installed) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    hups = installed.root / "hups"
    cert = installed.cert_dir / "svid.pem"
    proc = subprocess.Popen(
        [sys.executable, "-c", MASTER, str(hups), str(cert)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    (installed.root / "run" / "nginx.pid").write_text(f"{proc.pid}\n")
    yield proc, hups
    proc.kill()
    proc.wait()


def test_sidecar_unit_runs_as_its_user_and_nginx_group(
    installed: Installed,
    agent: subprocess.Popen[bytes],
    master: tuple[subprocess.Popen[str], Path],
) -> None:
    assert installed.unit.user == "spiffe-bridge" and installed.unit.group == "www-data"
    d = installed.cert_dir
    st = d.stat()
    assert (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name) == ("spiffe-bridge", "www-data")
    assert stat.S_IMODE(st.st_mode) == 0o750

    sidecar = UnitProcess(installed.unit, installed.root / "run", installed.root / "sidecar.log")
    try:
        sidecar.wait_ready()
        for name in ("svid.pem", "svid_key.pem", "svid_bundle.pem"):
            assert (d / name).exists(), sidecar.output()
        key = (d / "svid_key.pem").stat()
        assert stat.S_IMODE(key.st_mode) == 0o600 and pwd.getpwuid(key.st_uid).pw_name == "spiffe-bridge"

        nginx_worker = Unit.parse("nginx-worker", "[Service]\nUser=www-data\nGroup=www-data\n")
        read = run_as(nginx_worker, ["cat", str(d / "svid.pem"), str(d / "svid_bundle.pem")])
        assert read.returncode == 0 and "BEGIN CERTIFICATE" in read.stdout, read.stderr
        assert run_as(nginx_worker, ["cat", str(d / "svid_key.pem")]).returncode != 0

        # a rotation reaches root's "nginx master" through the pid file (the unit's CAP_KILL),
        # after the new certificate is in place
        _, hups = master
        before = hashlib.sha256((d / "svid.pem").read_bytes()).hexdigest()
        agent.send_signal(signal.SIGUSR1)
        wait_until(
            lambda: hups.exists() and any(h not in ("", before) for h in hups.read_text().split("\n")),
            "SIGHUP to the nginx master with the rotated certificate in place",
            20.0,
        )
        assert sidecar.proc.poll() is None, sidecar.output()
    finally:
        sidecar.stop()
