"""The relay's listening socket file: address, stale-file cleanup, mode and owner.

A socket file left behind by a crashed relay is removed at start, but one that
a live process still serves is not (the start fails instead of stealing it).
The socket is bound under a temporary name, given its mode and owner, and
only then renamed into place, so no client ever sees it with the wrong
permissions whatever the umask.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import secrets
import socket
import stat
from dataclasses import dataclass

from spiffe_bridge.address import parse
from spiffe_bridge.errors import AddressError

MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes including the trailing NUL


def listen_path(address: str) -> str:
    """The socket path of ``unix:///p``, ``unix:/p`` or ``/p``; the relay only listens on Unix sockets."""
    endpoint = parse(address)
    if endpoint.kind != "unix":
        raise AddressError(f"the relay listens on a Unix socket, not {address!r}: use unix:///path")
    if len(endpoint.path.encode()) > MAX_SOCKET_PATH:
        raise AddressError(f"socket path is longer than {MAX_SOCKET_PATH} bytes: {endpoint.path}")
    return endpoint.path


def parse_mode(text: str) -> int:
    """``0660`` / ``660`` -> 0o660 (octal permission bits only)."""
    try:
        mode = int(text, 8)
    except ValueError:
        raise ValueError(f"socket mode {text!r} is not an octal number like 0660") from None
    if not 0 <= mode <= 0o777:
        raise ValueError(f"socket mode {text!r} must be permission bits (0000-0777)")
    return mode


@dataclass(frozen=True, slots=True)
class Owner:
    """Numeric owner and group for the socket file; -1 leaves one unchanged (as os.chown does)."""

    uid: int = -1
    gid: int = -1

    @classmethod
    def parse(cls, text: str) -> Owner:
        """``uid[:gid]`` with numbers or names (``1000:1000``, ``linkerd:linkerd``, ``:proxy``)."""
        user, _, group = text.partition(":")
        return cls(_lookup(user, "user") if user else -1, _lookup(group, "group") if group else -1)


def _lookup(name: str, what: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid if what == "user" else grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}") from None


def clear_stale(path: str) -> None:
    """Remove a socket file nobody serves; refuse a live one or a non-socket file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; not removing it")
    if is_served(path):
        raise FileExistsError(f"{path} is served by another process (is a relay already running?)")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


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


def temporary_path(path: str) -> str:
    """A fresh name next to ``path`` to bind under (``path`` itself if that name would be too long)."""
    directory, name = os.path.split(path)
    candidate = os.path.join(directory, f".{name}.{secrets.token_hex(4)}")
    return candidate if len(candidate.encode()) <= MAX_SOCKET_PATH else path


def publish(bound: str, path: str, mode: int | None, owner: Owner | None) -> int:
    """Set mode and owner on the bound socket, move it to ``path``; return its inode."""
    if owner is not None and (owner.uid != -1 or owner.gid != -1):
        os.chown(bound, owner.uid, owner.gid)
    if mode is not None:
        os.chmod(bound, mode)
    if bound != path:
        os.rename(bound, path)
    return os.lstat(path).st_ino


def remove(path: str, inode: int) -> None:
    """Remove the socket file if it is still the one this relay created."""
    try:
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass


def discard(path: str) -> None:
    """Remove a socket file at ``path`` if there is one (cleanup after a failed start)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
