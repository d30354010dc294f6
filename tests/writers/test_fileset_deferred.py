"""FileSetWriter's deferred durability: ``write(durable=False)`` swaps at once, ``sync()`` fsyncs after."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from spiffe_bridge.fileset import FileSetWriter, FileSpec, read_current


def creds(n: int) -> list[FileSpec]:
    return [
        FileSpec("svid.pem", f"cert {n}\n".encode(), 0o644),
        FileSpec("svid_key.pem", f"key {n}\n".encode(), 0o600),
        FileSpec("federated/partner.test.pem", f"partner {n}\n".encode(), 0o644),
    ]


class FsyncLog:
    """Records which inodes os.fsync was called on (the real fsync still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.inodes: list[tuple[int, int]] = []
        real = os.fsync

        def fsync(fd: int) -> None:
            st = os.fstat(fd)
            self.inodes.append((st.st_dev, st.st_ino))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


def inode(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


@pytest.mark.parametrize("layout", ["symlink", "flat"])
def test_deferred_write_swaps_without_fsync_and_sync_makes_it_durable(
    tmp_path: Path, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = FileSetWriter(tmp_path / "out", layout=layout)  # type: ignore[arg-type]
    writer.write(creds(1))
    log = FsyncLog(monkeypatch)
    result = writer.write(creds(2), durable=False)
    assert result.changed and log.inodes == []
    out = tmp_path / "out"
    assert (out / "svid_key.pem").read_bytes() == b"key 2\n"  # visible before any fsync
    assert stat.S_IMODE((out / "svid_key.pem").stat().st_mode) == 0o600
    if layout == "symlink":
        assert read_current(out, ["svid.pem", "svid_key.pem"]) == {
            "svid.pem": b"cert 2\n",
            "svid_key.pem": b"key 2\n",
        }
    writer.sync()
    wanted = {inode(out / s.name) for s in creds(2)} | {inode(out), inode(out / "federated")}
    if layout == "symlink":
        wanted.add(inode(out / "..data"))  # the version directory itself
    assert wanted <= set(log.inodes)
    log.inodes.clear()
    writer.sync()  # nothing left to do
    assert log.inodes == []


def test_durable_write_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = FileSetWriter(tmp_path / "out")
    log = FsyncLog(monkeypatch)
    writer.write(creds(1))
    assert inode(tmp_path / "out" / "svid_key.pem") in log.inodes
    log.inodes.clear()
    writer.sync()
    assert log.inodes == []


def test_deferred_write_leaves_pruning_to_sync(tmp_path: Path) -> None:
    out = tmp_path / "out"
    writer = FileSetWriter(out, keep_versions=1)
    writer.write(creds(1))
    writer.write(creds(2), durable=False)
    versions = [e for e in os.listdir(out) if e.startswith("..2")]
    assert len(versions) == 2  # the old version is still there: unlinking is slow, so it waits
    writer.sync()
    assert [e for e in os.listdir(out) if e.startswith("..2")] == [os.readlink(out / "..data")]
    assert (out / "svid.pem").read_bytes() == b"cert 2\n"
