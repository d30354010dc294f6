"""Reading a set as its consumers should: pin ``..data`` once so cert and key always match."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from spiffe_bridge.fileset._safeio import OPEN_DIR
from spiffe_bridge.fileset.names import DATA_LINK, VERSION_RE


def current_version_dir(directory: str | os.PathLike[str]) -> Path | None:
    """The version directory ``..data`` points at now (symlink layout), or None."""
    target = _readlink_path(Path(directory) / DATA_LINK)
    if target is None or not VERSION_RE.match(target):
        return None
    return Path(directory) / target


def _readlink_path(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def read_current(
    directory: str | os.PathLike[str], names: Sequence[str], attempts: int = 5
) -> dict[str, bytes]:
    """Read ``names`` as one coherent set: pin ``..data`` once, then read every file from it.

    In the flat layout (no ``..data``) the files are read one by one, without that
    guarantee. Retries when the pinned version is pruned mid-read.
    """
    base = Path(directory)
    for attempt in range(attempts):
        try:
            dfd = os.open(base / DATA_LINK, OPEN_DIR)
        except FileNotFoundError:
            return {n: (base / n).read_bytes() for n in names}
        try:
            return {n: _read_at(dfd, n) for n in names}
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
        finally:
            os.close(dfd)
    raise AssertionError("unreachable")


def _read_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def iter_versions(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Version directories present in ``directory``, newest first (for tests and diagnostics)."""
    base = Path(directory)
    for entry in sorted((e for e in os.listdir(base) if VERSION_RE.match(e)), reverse=True):
        yield base / entry
