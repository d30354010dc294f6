"""One socket a relay serves, with the SVIDs its clients may see and its file mode/owner.

A relay can serve several sockets from the same upstream streams, so each
proxy on a host gets a socket showing only its own identity while the agent
keeps one stream per kind. On the command line a socket is written
``unix:///path[,id=ID][,hint=HINT][,mode=0660][,owner=USER:GROUP]`` (``id`` and
``hint`` repeatable; SPIFFE IDs cannot contain commas).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from spiffe_bridge.relay import sockets
from spiffe_bridge.relay.filter import SvidFilter
from spiffe_bridge.relay.sockets import Owner


@dataclass(frozen=True)
class Listener:
    """A socket path, its filter, and the mode/owner its file gets (None: leave as created)."""

    path: str
    filter: SvidFilter = field(default_factory=SvidFilter)
    mode: int | None = None
    owner: Owner | None = None

    @classmethod
    def of(
        cls,
        listen: str,
        *,
        allow_ids: Iterable[str] = (),
        allow_hints: Iterable[str] = (),
        socket_mode: int | None = None,
        socket_owner: Owner | str | None = None,
    ) -> Listener:
        """Build and check one from ``unix:///path`` and the relay's keyword options."""
        owner = Owner.parse(socket_owner) if isinstance(socket_owner, str) else socket_owner
        return cls(sockets.listen_path(listen), SvidFilter.of(allow_ids, allow_hints), socket_mode, owner)

    @classmethod
    def parse(cls, spec: str) -> Listener:
        """``unix:///path[,id=ID][,hint=H][,mode=0660][,owner=U:G]``; ValueError says what is wrong."""
        address, *options = spec.split(",")
        ids: list[str] = []
        hints: list[str] = []
        mode: int | None = None
        owner: str | None = None
        for option in options:
            key, sep, value = option.partition("=")
            if not sep or not value:
                raise ValueError(f"{spec!r}: expected key=value after the address, got {option!r}")
            if key == "id":
                ids.append(value)
            elif key == "hint":
                hints.append(value)
            elif key == "mode":
                mode = sockets.parse_mode(value)
            elif key == "owner":
                owner = value
            else:
                raise ValueError(f"{spec!r}: unknown option {key!r} (id, hint, mode, owner)")
        return cls.of(address, allow_ids=ids, allow_hints=hints, socket_mode=mode, socket_owner=owner)

    @property
    def address(self) -> str:
        """``unix:///path``, for SPIFFE_ENDPOINT_SOCKET or a proxy's config."""
        return "unix://" + self.path
