"""Unix socket files that hand out keys: created with their final mode, never stolen from a live server.

Shared by the relay and the dev agent. A socket is bound inside a fresh
directory of its own (mode 0700, next to the final path), given its mode and
owner there, and only then renamed into place: no client can connect while it
still has the umask's mode, since nobody but us can enter that directory (the
mode of a Unix socket is checked at connect time only, so a connection made
in such a window would outlive a later chmod). A socket file left by a
crashed server is replaced; one that a live process serves is not.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import socket
import stat
from collections.abc import Iterator

log = logging.getLogger("spiffe_bridge.socketfile")

MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes including the trailing NUL
#: Mode of directories created for a socket: others may reach the socket, not replace it.
DIRECTORY_MODE = 0o755
#: The umask the rare in-place bind runs under (socket path too long for a private directory).
_TIGHT_UMASK = 0o177


def make_parents(path: str) -> None:
    """Create the missing directories above ``path`` with mode 0755, whatever the umask."""
    directory = os.path.dirname(path)
    missing: list[str] = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(created, DIRECTORY_MODE)
            os.chmod(created, DIRECTORY_MODE)  # mkdir's mode is cut by the umask


def is_served(path: str) -> bool:
    """True when something accepts connections on the socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise
    finally:
        probe.close()
    return True


def clear_stale(path: str, what: str = "server") -> None:
    """Remove a socket file nobody serves; FileExistsError for a live one or a non-socket file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; not removing it")
    if is_served(path):
        raise FileExistsError(f"{path} is served by another process (is a {what} already running?)")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class Staged:
    """Where to bind a socket before it appears at ``path``, and how to publish or discard it.

    Use ``bind_path`` for the bind; then ``publish`` (mode, owner, rename into place) or
    ``discard``. When the private directory's path would be too long for a socket, the bind
    happens at ``path`` itself and must run inside ``tight_umask()``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        parent = os.path.dirname(path) or "."
        private = os.path.join(parent, ".sb" + secrets.token_hex(3))
        candidate = os.path.join(private, "s")
        self._private: str | None = None
        if len(candidate.encode()) <= MAX_SOCKET_PATH:
            os.mkdir(private, 0o700)
            self._private = private
            self.bind_path = candidate
        else:
            self.bind_path = path

    @contextlib.contextmanager
    def tight_umask(self) -> Iterator[None]:
        """Run the bind under umask 0177 when it happens in place (process-wide, for a moment)."""
        if self._private is not None:
            yield
            return
        previous = os.umask(_TIGHT_UMASK)
        try:
            yield
        finally:
            os.umask(previous)

    def publish(self, mode: int, uid: int = -1, gid: int = -1) -> int:
        """Give the bound socket its owner and mode, move it to ``path``; return its inode."""
        if uid != -1 or gid != -1:
            os.chown(self.bind_path, uid, gid)
        os.chmod(self.bind_path, mode)
        if self._private is not None:
            os.rename(self.bind_path, self.path)
            os.rmdir(self._private)
            self._private = None
        if world_connectable(self.path):
            log.warning("%s (mode %04o) can be connected to by every local user", self.path, mode)
        return os.lstat(self.path).st_ino

    def discard(self) -> None:
        """Remove what was bound (a failed start); ``path`` is left alone unless bound in place."""
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.bind_path).st_mode):
                os.unlink(self.bind_path)
        if self._private is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._private)
            self._private = None


def world_connectable(path: str) -> bool:
    """True when every local user may connect: the socket is o+w and every directory above is o+x."""
    if not os.stat(path).st_mode & stat.S_IWOTH:
        return False
    directory = os.path.dirname(os.path.abspath(path))
    while True:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(directory)
        if parent == directory:
            return True
        directory = parent


def remove(path: str, inode: int) -> None:
    """Remove the socket file if it is still the one this process created."""
    with contextlib.suppress(FileNotFoundError):
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
