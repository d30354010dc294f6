"""Write failures keep the previous set intact, leave no temp files and raise a WriteError saying why.

How the failures are produced (all real kernel errors, no mocks):

* full filesystem -- as root, a 256 KiB tmpfs is mounted on a temp directory and
  filled with a filler file until ENOSPC; without root/mount the test is skipped
  and the RLIMIT_FSIZE test below covers "the write itself fails part-way".
* file too large -- a child process with ``RLIMIT_FSIZE`` of 1 KiB (SIGXFSZ
  ignored) tries to write a bigger set and gets EFBIG; works for any user.
* read-only directory -- root ignores ``chmod 0500``, so as root we use a tmpfs
  remounted ``ro`` (EROFS) and, on filesystems that support it, ``chattr +i``
  on the directory (EPERM); as a normal user ``chmod 0500`` (EACCES).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spiffe_bridge.fileset import FileSetWriter, FileSpec, WriteError, current_version_dir, iter_versions

LAYOUTS = ("symlink", "flat")
IS_ROOT = os.geteuid() == 0


def creds(n: int, size: int = 0) -> list[FileSpec]:
    pad = b"#" * size
    return [
        FileSpec("svid.pem", f"cert {n}\n".encode() + pad, 0o644),
        FileSpec("svid_key.pem", f"key {n}\n".encode() + pad, 0o600),
        FileSpec("svid_bundle.pem", f"bundle {n}\n".encode() + pad, 0o644),
    ]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {f.name: (directory / f.name).read_bytes() for f in creds(0)}


def assert_clean(directory: Path, layout: str, version: Path | None) -> None:
    """Only the set itself: no temp files, no half-built version directories."""
    leftovers = [e for e in os.listdir(directory) if e.endswith(".tmp") or "_tmp." in e]
    assert leftovers == []
    if layout == "symlink":
        assert current_version_dir(directory) == version
        assert list(iter_versions(directory)) == [version]


def _run(*cmd: str) -> bool:
    return subprocess.run(cmd, capture_output=True).returncode == 0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (root and a working ``mount`` only)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if not IS_ROOT or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    if not _run("mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(mount_point)):
        pytest.skip("mount -t tmpfs is not permitted here (no CAP_SYS_ADMIN)")
    try:
        yield mount_point
    finally:
        _run("umount", str(mount_point)) or _run("umount", "-l", str(mount_point))


def fill(directory: Path) -> Path:
    """Fill the filesystem holding ``directory`` until ENOSPC; return the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        chunk = b"\0" * 4096
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@pytest.mark.parametrize("layout", LAYOUTS)
def test_full_filesystem(tmpfs: Path, layout: str) -> None:
    out = tmpfs / "out"
    writer = FileSetWriter(out, layout=layout)  # type: ignore[arg-type]
    writer.write(creds(1))
    before, version = snapshot(out), current_version_dir(out)
    filler = fill(tmpfs)

    with pytest.raises(WriteError) as info:
        writer.write(creds(2, size=8192))
    assert info.value.errno == errno.ENOSPC
    assert "ENOSPC" in str(info.value) and info.value.path.startswith(str(out))
    assert snapshot(out) == before
    assert_clean(out, layout, version)

    filler.unlink()
    assert writer.write(creds(2, size=8192)).changed
    assert (out / "svid_key.pem").read_bytes().startswith(b"key 2\n")


_CHILD = """
import json, sys
from spiffe_bridge.fileset import FileSetWriter, FileSpec, WriteError
directory, layout = sys.argv[1], sys.argv[2]
files = [FileSpec(n, n.encode() * 1000, m) for n, m in
         (("svid.pem", 0o644), ("svid_key.pem", 0o600), ("svid_bundle.pem", 0o644))]
try:
    FileSetWriter(directory, layout=layout).write(files)
    print(json.dumps({"ok": True}))
except WriteError as exc:
    print(json.dumps({"errno": exc.errno, "path": exc.path, "message": str(exc)}))
"""


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_write_fails_part_way(tmp_path: Path, layout: str) -> None:
    out = tmp_path / "out"
    FileSetWriter(out, layout=layout).write(creds(1))  # type: ignore[arg-type]
    before, version = snapshot(out), current_version_dir(out)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(out), layout],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        check=True,
    )
    result = json.loads(child.stdout)
    assert result.get("errno") == errno.EFBIG, child.stdout + child.stderr
    assert result["path"].startswith(str(out)) and "EFBIG" in result["message"]
    assert snapshot(out) == before
    assert_clean(out, layout, version)


@pytest.fixture(params=["remount-ro", "chattr+i", "chmod-0500"])
def readonly(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Callable[[], int]]]:
    """(directory, make_readonly) -- make_readonly() returns the errno writes will then fail with."""
    method = request.param
    undo: list[Callable[[], object]] = []
    if method == "remount-ro":
        directory = request.getfixturevalue("tmpfs") / "out"

        def make() -> int:
            assert _run("mount", "-o", "remount,ro", str(directory.parent))
            undo.append(lambda: _run("mount", "-o", "remount,rw", str(directory.parent)))
            return errno.EROFS

    elif method == "chattr+i":
        if not IS_ROOT or not shutil.which("chattr"):
            pytest.skip("chattr +i needs root and e2fsprogs")
        directory = tmp_path / "out"

        def make() -> int:
            if not _run("chattr", "+i", str(directory)):
                pytest.skip("this filesystem does not support the immutable attribute")
            undo.append(lambda: _run("chattr", "-i", str(directory)))
            return errno.EPERM

    else:
        if IS_ROOT:
            pytest.skip("root ignores directory permissions; covered by remount-ro and chattr+i")
        directory = tmp_path / "out"

        def make() -> int:
            directory.chmod(0o500)
            undo.append(lambda: directory.chmod(0o755))
            return errno.EACCES

    try:
        yield directory, make
    finally:
        for fn in reversed(undo):
            fn()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_read_only_directory(readonly: tuple[Path, Callable[[], int]], layout: str) -> None:
    out, make_readonly = readonly
    writer = FileSetWriter(out, layout=layout)  # type: ignore[arg-type]
    writer.write(creds(1))
    before, version = snapshot(out), current_version_dir(out)
    expected = make_readonly()

    assert writer.write(creds(1)).changed is False  # nothing to do needs no write access
    with pytest.raises(WriteError) as info:
        writer.write(creds(2))
    assert info.value.errno == expected
    assert info.value.path.startswith(str(out))
    assert errno.errorcode[expected] in str(info.value)
    assert snapshot(out) == before
    assert_clean(out, layout, version)
