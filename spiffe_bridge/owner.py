"""User and group names or numbers, as every owner option takes them (``uid = "nginx"``, ``proxy:proxy``)."""

from __future__ import annotations

import grp
import pwd
from typing import Literal


def lookup_id(value: str | int, what: Literal["user", "group"]) -> int:
    """The numeric id of a user or group given by number or name; ValueError naming an unknown one."""
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        pass  # a name
    try:
        return pwd.getpwnam(value).pw_uid if what == "user" else grp.getgrnam(value).gr_gid
    except KeyError:
        raise ValueError(f"unknown {what} {value!r} (no such entry in this host's {what} database)") from None
