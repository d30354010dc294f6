"""Fixtures for running the examples' units as their real users.

Needs root (users are created, processes change uid), ``setpriv``, ``useradd``,
``systemd-analyze`` and Debian's ``/usr/bin/python3`` with venv. Without them the
tests skip with the reason, and under CI=true they fail. The project's own
Python may live where other users cannot execute it (e.g. under a 0700 /root),
so the wheel is installed, once per session, into a venv of the system Python in
a world-readable scratch directory: the units then run what an SRE would install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support.ci import missing

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
TOOLS = ("setpriv", "useradd", "userdel", "systemd-analyze")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the example unit tests run as root (they create users and change uid)"
    for tool in TOOLS:
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            return f"{tool} not found (scripts/install-system-deps.sh installs it)"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (scripts/install-system-deps.sh installs python3-venv)"
    return None


@pytest.fixture(scope="session")
def unit_host() -> None:
    """Skip (or fail under CI=true) when this machine cannot run the units as their users."""
    reason = _missing()
    if reason is not None:
        missing(reason)
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


@pytest.fixture(scope="session")
def scratch(unit_host: None) -> Iterator[Path]:
    """A short, world-traversable directory for the session (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="sbu-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def installed_bin(scratch: Path) -> Path:
    """bin/ of a venv of the system Python with the repository's wheel installed."""
    dist = scratch / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-o", str(dist), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheels = sorted(dist.glob("spiffe_bridge-*.whl"))
    assert len(wheels) == 1, wheels
    venv = scratch / "venv"
    # without PYTHONPATH: a source tree on it would make pip think the package is already installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True, capture_output=True, env=env)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheels[0])],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (venv / "bin" / "spiffe-bridge").exists(), "the wheel installed no spiffe-bridge entry point"
    return venv / "bin"


@pytest.fixture(scope="session")
def system_users(unit_host: None) -> Iterator[list[str]]:
    """Create the examples' system users (as install.sh does); remove at the end only those made here."""
    wanted = ["spire", "spiffe-relay", "linkerd-proxy", "spiffe-bridge"]
    created = []
    for user in wanted:
        if subprocess.run(["id", "-u", user], capture_output=True).returncode != 0:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    user,
                ],
                check=True,
            )
            created.append(user)
    yield wanted
    for user in created:
        subprocess.run(["userdel", user], check=False)


_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.units)
