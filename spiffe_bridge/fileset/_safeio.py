"""File-system primitives that never follow a link: every name is one component under a directory fd.

The writer usually runs as root in a directory others may write to, so nothing read
back from it is trusted to lead anywhere: parents are opened one component at a time
with ``O_NOFOLLOW``, files are created with ``O_EXCL|O_NOFOLLOW`` at 0600, and every
unlink or rmdir names a single entry of an fd we opened. Every fsync of the package
goes through :func:`fsync_file` or :func:`fsync_dir`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from contextvars import ContextVar

from spiffe_bridge.fileset.spec import FileSpec

#: Mode of every directory the writer creates (after its content is in place).
DIR_MODE = 0o755
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_PEEK = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


#: True inside ``FileSetWriter.write(durable=False)``: fsyncs are skipped and left to ``sync()``.
DEFER_SYNC: ContextVar[bool] = ContextVar("spiffe_bridge_defer_sync", default=False)


def fsync_file(fd: int, *, now: bool = False) -> None:
    """Make a written file's content durable before a rename makes it visible (unless deferred)."""
    if now or not DEFER_SYNC.get():
        os.fsync(fd)


def fsync_at(dir_fd: int, parts: Sequence[str], name: str) -> None:
    """Fsync the file ``parts/name`` below ``dir_fd`` now (a deferred write's), never following a link."""
    pfd = open_subdir(dir_fd, parts, create=False)
    try:
        fd = os.open(name, _OPEN_PEEK, dir_fd=pfd)
    finally:
        os.close(pfd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(fd: int, *, now: bool = False) -> None:
    """Make renames and unlinks in a directory durable (unless deferred); a refusing filesystem is fine."""
    if not now and DEFER_SYNC.get():
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.EROFS):
            raise


def write_new(dir_fd: int, name: str, spec: FileSpec, uid: int | None, gid: int | None) -> None:
    """Create ``name`` exclusively, write, set owner and mode, fsync; unlink it on failure."""
    fd = os.open(name, _OPEN_NEW, 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(spec.data)
        while view:
            view = view[os.write(fd, view) :]
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        os.fchmod(fd, spec.mode)
        fsync_file(fd)
    except BaseException:
        os.close(fd)
        unlink_quiet(dir_fd, name)
        raise
    os.close(fd)


def unlink_quiet(dir_fd: int, name: str) -> None:
    """Unlink ``name`` if it is there; for cleaning up after a failure that is reported already."""
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def same_file(dir_fd: int, name: str, spec: FileSpec, uid: int | None, gid: int | None) -> bool:
    """True when ``name`` is a plain single-link file with exactly this content, mode and owner."""
    try:
        fd = os.open(name, _OPEN_PEEK, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != len(spec.data):
            return False
        if stat.S_IMODE(st.st_mode) != spec.mode:
            return False
        if (uid is not None and st.st_uid != uid) or (gid is not None and st.st_gid != gid):
            return False
        chunks = []
        remaining = len(spec.data) + 1
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks) == spec.data
    except OSError:
        return False
    finally:
        os.close(fd)


def read_limited(dir_fd: int, name: str, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of the file ``name`` (never through a link, never blocking), or None."""
    try:
        fd = os.open(name, _OPEN_PEEK, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            return fh.read(limit)
    except OSError:
        return None


def lstat(dir_fd: int, name: str) -> os.stat_result | None:
    """``lstat`` of ``name`` in ``dir_fd``, or None when there is nothing there."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def readlink(dir_fd: int, name: str) -> str | None:
    """The target of the symlink ``name`` in ``dir_fd``, or None when it is not a readable link."""
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None


def open_subdir(dir_fd: int, parts: Sequence[str], create: bool) -> int:
    """Open (and optionally create) nested directories without following any symlink."""
    fd = os.dup(dir_fd)
    try:
        for part in parts:
            made = False
            if create:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                    made = True
                except FileExistsError:
                    pass
            nxt = os.open(part, OPEN_DIR | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
            if made:
                os.fchmod(fd, DIR_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_parent(dir_fd: int, name: str) -> tuple[int, str]:
    """The directory holding relative ``name`` (opened without following a link) and its last part."""
    *parents, base = name.split("/")
    return open_subdir(dir_fd, parents, create=False), base


def remove_under(dir_fd: int, name: str) -> None:
    """Unlink the file or link ``name`` below ``dir_fd``, then rmdir the parents it left empty.

    Every parent is opened with ``O_NOFOLLOW`` and every unlink/rmdir names a single
    component in its parent's fd, so a link anywhere on the way (``x -> /victim`` for
    ``x/secret.txt``) ends the removal instead of reaching outside ``dir_fd``.
    """
    *parents, base = name.split("/")
    fds = [os.dup(dir_fd)]
    try:
        for part in parents:
            try:
                fds.append(os.open(part, OPEN_DIR | os.O_NOFOLLOW, dir_fd=fds[-1]))
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    return  # gone, or a link / non-directory: nothing of ours is behind it
                raise
        st = lstat(fds[-1], base)
        if st is None or stat.S_ISDIR(st.st_mode):
            return
        os.unlink(base, dir_fd=fds[-1])
        for depth in range(len(parents), 0, -1):
            try:
                os.rmdir(parents[depth - 1], dir_fd=fds[depth - 1])
            except OSError:
                break
    finally:
        for fd in fds:
            os.close(fd)
