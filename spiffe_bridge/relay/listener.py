"""One socket a relay serves, with the SVIDs its clients may see and its file mode/owner.

A relay can serve several sockets from the same upstream streams, so each
proxy on a host gets a socket showing only its own identity while the agent
keeps one stream per kind. On the command line a socket is written
``unix:///path[,id=ID][,hint=HINT][,mode=0660][,owner=USER:GROUP]`` (``id`` and
``hint`` repeatable; SPIFFE IDs cannot contain commas).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from spiffe_bridge.filemode import parse_mode
from spiffe_bridge.relay import sockets
from spiffe_bridge.relay.filter import SvidFilter
from spiffe_bridge.relay.sockets import DEFAULT_MODE, Owner


@dataclass(frozen=True)
class Listener:
    """A socket path, its filter, and the mode/owner its file gets (owner None: the relay's own)."""

    path: str
    filter: SvidFilter = field(default_factory=SvidFilter)
    mode: int = DEFAULT_MODE
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
        """Build and check one from ``unix:///path`` and the relay's keyword options (mode None: 0660)."""
        owner = Owner.parse(socket_owner) if isinstance(socket_owner, str) else socket_owner
        mode = DEFAULT_MODE if socket_mode is None else socket_mode
        return cls(sockets.listen_path(listen), SvidFilter.of(allow_ids, allow_hints), mode, owner)

    @classmethod
    def parse(
        cls,
        spec: str,
        *,
        default_filter: SvidFilter | None = None,
        default_mode: int | None = None,
        default_owner: Owner | None = None,
    ) -> Listener:
        """``unix:///path[,id=ID][,hint=H][,mode=0660][,owner=U:G]``; ValueError says what is wrong.

        The ``default_*`` values apply to what the spec does not set itself (the CLI's flags).
        """
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
                mode = parse_mode(value)
            elif key == "owner":
                owner = value
            else:
                raise ValueError(f"{spec!r}: unknown option {key!r} (id, hint, mode, owner)")
        listener = cls.of(address, allow_ids=ids, allow_hints=hints, socket_mode=mode, socket_owner=owner)
        return cls(
            listener.path,
            listener.filter if listener.filter.active or default_filter is None else default_filter,
            listener.mode if mode is not None or default_mode is None else default_mode,
            listener.owner if owner is not None else default_owner,
        )

    @property
    def resolved(self) -> str:
        """The path with symlinks, ``..`` and ``.`` resolved: two aliases of one socket compare equal."""
        return os.path.realpath(self.path)

    @property
    def address(self) -> str:
        """``unix:///path``, for SPIFFE_ENDPOINT_SOCKET or a proxy's config."""
        return "unix://" + self.path
