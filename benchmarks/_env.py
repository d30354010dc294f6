"""Where the benchmarks run: machine facts, tool versions and the spiffe-helper binary.

Every figure is only meaningful next to the machine it came from, so the
results JSON and RESULTS.md carry nproc, CPU model, RAM, the filesystem the
files are written to (fsync cost differs by orders of magnitude between tmpfs
and a disk) and the versions of Python, grpcio, py-spiffe and spiffe-helper.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = REPO / "scripts" / "install-spire.sh"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1024 * 1024), 1)
    except OSError:
        pass
    return None


def _fs_type(path: str) -> str:
    """The filesystem type of ``path`` from /proc/self/mounts (longest matching mount point)."""
    best, kind = "", "unknown"
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3 or len(parts[1]) < len(best):
                    continue
                if real == parts[1] or real.startswith(parts[1].rstrip("/") + "/"):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def spiffe_helper() -> Path | None:
    """The spiffe-helper binary built by scripts/install-spire.sh (or $SPIRE_BIN_DIR), if present.

    Only ``--print-bin-dir`` is asked, which never builds: a benchmark run must
    not start a Go build behind the user's back.
    """
    candidates: list[Path] = []
    if os.environ.get("SPIRE_BIN_DIR"):
        candidates.append(Path(os.environ["SPIRE_BIN_DIR"]) / "spiffe-helper")
    if INSTALL_SCRIPT.exists():
        try:
            done = subprocess.run(
                ["bash", str(INSTALL_SCRIPT), "--print-bin-dir"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            lines = done.stdout.strip().splitlines()
            if done.returncode == 0 and lines:
                candidates.append(Path(lines[-1]) / "spiffe-helper")
        except (OSError, subprocess.TimeoutExpired):
            pass
    found = shutil.which("spiffe-helper")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


HELPER_MISSING = "spiffe-helper not built (run scripts/install-spire.sh); its figures are skipped"


@functools.cache
def spiffe_helper_version() -> str | None:
    """spiffe-helper's self-reported version, else the pin in its bin dir name."""
    path = spiffe_helper()
    if path is None:
        return None
    try:
        done = subprocess.run(
            [str(path), "-version"], capture_output=True, text=True, timeout=10, check=False
        )
        text = (done.stdout + done.stderr).strip().splitlines()
        if done.returncode == 0 and text:
            return text[-1].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    name = path.parent.name
    return name.split("spiffe-helper-", 1)[1] if "spiffe-helper-" in name else "unknown"


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def source_state() -> dict[str, Any]:
    """The commit measured, and library files that differed from it (the work tree is shared)."""
    dirty = [line[3:] for line in _git("status", "--porcelain", "--", "spiffe_bridge").splitlines()]
    return {"commit": _git("rev-parse", "--short", "HEAD"), "library_changes_not_committed": dirty}


def machine(workdir: str) -> dict[str, Any]:
    """Facts about this run: date, machine, filesystem of ``workdir``, versions."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "ram_gib": _ram_gib(),
        "kernel": platform.release(),
        "workdir_fs": _fs_type(workdir),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "cryptography": _version("cryptography"),
        "py_spiffe": _version("spiffe"),
        "spiffe_bridge": _version("spiffe-bridge"),
        "spiffe_helper": spiffe_helper_version(),
        "spiffe_helper_path": str(spiffe_helper()) if spiffe_helper() else None,
        **source_state(),
    }


#: Bytecode cache for benchmark subprocesses, outside the work tree.
PYCACHE = (
    Path(os.environ.get("SPIFFE_BRIDGE_CACHE", Path.home() / ".cache" / "spiffe-bridge")) / "bench-pycache"
)


def probe_env() -> dict[str, str]:
    """Environment for benchmark subprocesses: the repo importable, bytecode cached, no agent variable.

    ``PYTHONDONTWRITEBYTECODE`` (set in some dev shells) would make every
    subprocess compile the editable package from source, which no installed
    package does; so bytecode is cached under ``PYCACHE`` (outside the work
    tree) for every library alike, and cold-start figures measure imports,
    not the compiler.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("SPIFFE_ENDPOINT_SOCKET", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env
