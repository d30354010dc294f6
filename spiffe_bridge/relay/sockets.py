"""The relay's listening socket: its address, mode and owner as given on the command line.

Creating the file (private bind, mode, rename, stale-file check) is
``spiffe_bridge.socketfile``, shared with the dev agent.
"""

from __future__ import annotations

from dataclasses import dataclass

from spiffe_bridge.address import parse
from spiffe_bridge.errors import AddressError
from spiffe_bridge.owner import lookup_id
from spiffe_bridge.socketfile import MAX_SOCKET_PATH

#: Mode of a relay socket unless told otherwise: its owner and group may connect, nobody else.
DEFAULT_MODE = 0o660


def listen_path(address: str) -> str:
    """The socket path of ``unix:///p``, ``unix:/p`` or ``/p``; the relay only listens on Unix sockets."""
    endpoint = parse(address)
    if endpoint.kind != "unix":
        raise AddressError(f"the relay listens on a Unix socket, not {address!r}: use unix:///path")
    if len(endpoint.path.encode()) > MAX_SOCKET_PATH:
        raise AddressError(f"socket path is longer than {MAX_SOCKET_PATH} bytes: {endpoint.path}")
    return endpoint.path


@dataclass(frozen=True, slots=True)
class Owner:
    """Numeric owner and group for the socket file; -1 leaves one unchanged (as os.chown does)."""

    uid: int = -1
    gid: int = -1

    @classmethod
    def parse(cls, text: str) -> Owner:
        """``uid[:gid]`` with numbers or names (``1000:1000``, ``linkerd:linkerd``, ``:proxy``)."""
        user, _, group = text.partition(":")
        return cls(lookup_id(user, "user") if user else -1, lookup_id(group, "group") if group else -1)
