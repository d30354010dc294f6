"""Run the examples' systemd units the way systemd would, without systemd.

A unit file is parsed (sections, repeated keys, continuation lines), its absolute
paths are moved under a scratch root, and its ``ExecStart=`` runs through
``setpriv`` with the unit's ``User=``, ``Group=``, ``SupplementaryGroups=``,
``UMask=``, ``NoNewPrivileges=`` and ``AmbientCapabilities=``, in the
``RuntimeDirectory=`` systemd would have made (owner and mode as the unit says).
``Type=notify`` readiness arrives on a notify socket, as under systemd. What is
NOT emulated: the sandbox (``ProtectSystem=`` etc.), ordering and restarts.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import select
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: systemd's default PATH for services.
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Unit:
    """The parsed keys of one unit file: ``{section: {key: [values in order]}}``."""

    name: str
    text: str
    sections: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, name: str, text: str) -> Unit:
        unit = cls(name, text)
        section = ""
        logical = ""
        for raw in text.splitlines():
            line = logical + raw.strip() if logical else raw.strip()
            if line.endswith("\\"):
                logical = line[:-1] + " "
                continue
            logical = ""
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                unit.sections.setdefault(section, {})
                continue
            key, sep, value = line.partition("=")
            assert sep, f"{name}: not a key=value line: {line!r}"
            unit.sections.setdefault(section, {}).setdefault(key.strip(), []).append(value.strip())
        return unit

    def get(self, key: str, default: str | None = None, section: str = "Service") -> str | None:
        values = self.sections.get(section, {}).get(key)
        return values[-1] if values else default

    def all(self, key: str, section: str = "Service") -> list[str]:
        return list(self.sections.get(section, {}).get(key, []))

    @property
    def exec_start(self) -> list[str]:
        lines = self.all("ExecStart")
        assert len(lines) == 1, f"{self.name}: expected one ExecStart=, got {lines}"
        # special prefixes (+ ! - @ :) change how systemd runs the command: not emulated here
        assert lines[0][:1] not in "+!-@:", f"{self.name}: ExecStart= prefix not supported: {lines[0]}"
        return shlex.split(lines[0])

    @property
    def user(self) -> str:
        return self.get("User") or "root"

    @property
    def group(self) -> str:
        return self.get("Group") or grp.getgrgid(pwd.getpwnam(self.user).pw_gid).gr_name

    def supplementary_groups(self) -> list[str]:
        """What systemd gives the process: the user's /etc/group memberships plus SupplementaryGroups=."""
        member_of = [g.gr_name for g in grp.getgrall() if self.user in g.gr_mem]
        extra = [g for value in self.all("SupplementaryGroups") for g in value.split()]
        return sorted(set(member_of + extra))


def moved(text: str, mapping: Sequence[tuple[str, str]]) -> str:
    """``text`` with each absolute path prefix replaced by its place under the scratch root, in order."""
    for old, new in mapping:
        text = text.replace(old, new)
    return text


def make_runtime_directories(unit: Unit, run_dir: Path) -> list[Path]:
    """``RuntimeDirectory=`` under ``run_dir`` as systemd makes it: parents root 0755, leaf User:Group."""
    mode = int(unit.get("RuntimeDirectoryMode", "0755") or "0755", 8)
    uid = pwd.getpwnam(unit.user).pw_uid
    gid = grp.getgrnam(unit.group).gr_gid
    made = []
    for name in (n for value in unit.all("RuntimeDirectory") for n in value.split()):
        path = run_dir / name
        for parent in reversed(path.relative_to(run_dir).parents):
            (run_dir / parent).mkdir(mode=0o755, exist_ok=True)
        path.mkdir(exist_ok=True)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        made.append(path)
    return made


def setpriv_argv(unit: Unit) -> list[str]:
    """``setpriv`` options giving a process the unit's credentials and privileges."""
    argv = [
        "setpriv",
        f"--reuid={pwd.getpwnam(unit.user).pw_uid}",
        f"--regid={grp.getgrnam(unit.group).gr_gid}",
    ]
    groups = unit.supplementary_groups()
    argv += (
        [f"--groups={','.join(str(grp.getgrnam(g).gr_gid) for g in groups)}"]
        if groups
        else ["--clear-groups"]
    )
    caps = [
        c.removeprefix("CAP_").lower() for value in unit.all("AmbientCapabilities") for c in value.split()
    ]
    if caps:
        wanted = ",".join(f"+{c}" for c in caps)
        argv += [f"--inh-caps={wanted}", f"--ambient-caps={wanted}"]
    bounding = [c.removeprefix("CAP_").lower() for v in unit.all("CapabilityBoundingSet") for c in v.split()]
    if bounding:
        argv += [f"--bounding-set=-all,{','.join(f'+{c}' for c in bounding)}"]
    if (unit.get("NoNewPrivileges") or "no").lower() in ("yes", "true", "1", "on"):
        argv.append("--no-new-privs")
    return [*argv, "--"]


def unit_environment(unit: Unit, runtime_dirs: Sequence[Path]) -> dict[str, str]:
    """The environment systemd starts a service with (the parts these examples use)."""
    env = {"PATH": SERVICE_PATH, "LANG": "C.UTF-8"}
    for value in unit.all("Environment"):
        for assignment in shlex.split(value):
            key, _, val = assignment.partition("=")
            env[key] = val
    if runtime_dirs:
        env["RUNTIME_DIRECTORY"] = ":".join(str(p) for p in runtime_dirs)
    return env


class UnitProcess:
    """One unit's ExecStart running as its user, with a notify socket for ``Type=notify``."""

    def __init__(self, unit: Unit, run_dir: Path, log: Path, argv: Sequence[str] | None = None) -> None:
        self.unit = unit
        self.log = log
        runtime_dirs = make_runtime_directories(unit, run_dir)
        env = unit_environment(unit, runtime_dirs)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = f"spiffe-bridge-units-{secrets.token_hex(6)}"
        self._notify.bind("\0" + name)  # abstract: any uid can send, as to systemd's notify socket
        env["NOTIFY_SOCKET"] = "@" + name
        umask = int(unit.get("UMask", "0022") or "0022", 8)
        command = list(argv if argv is not None else unit.exec_start)
        prefix = [] if unit.user == "root" and not unit.all("AmbientCapabilities") else setpriv_argv(unit)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*prefix, *command], env=env, stdout=out, stderr=subprocess.STDOUT, umask=umask, cwd="/"
            )

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until the service says READY=1; fail if it exits first or the deadline passes."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.unit.name}: no READY=1 within {timeout}s\n{self.output()}")
            # wake up at least every 0.5 s to notice a service that died instead of becoming ready
            readable, _, _ = select.select([self._notify], [], [], min(left, 0.5))
            if readable and b"READY=1" in self._notify.recv(4096).split(b"\n"):
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.unit.name} exited with {self.proc.returncode} before READY=1\n{self.output()}"
                )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._notify.close()


def run_as(unit: Unit, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` once with ``unit``'s credentials (e.g. a client the unit's process would be)."""
    return subprocess.run(
        [*setpriv_argv(unit), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": SERVICE_PATH, "LANG": "C.UTF-8"},
        cwd="/",
    )
