"""argparse types every command shares: durations, octal modes, owners, flags, argvs, host:port.

Stated once so ``--timeout 5s`` means the same to fetch, inspect, doctor and the relay.
Each wraps the library's parser and turns its ValueError into a usage error.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from spiffe_bridge.relay.sockets import Owner

T = TypeVar("T")


def _usage(parse: Callable[[str], T], text: str) -> T:
    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration(text: str) -> float:
    """Seconds from ``30s``, ``5m``, ``1h30m``, ``250ms`` or a bare number of seconds."""
    from spiffe_bridge.duration import parse_duration

    return _usage(parse_duration, text)


def mode(text: str) -> int:
    """Permission bits from octal ``0640`` / ``640`` (0000-0777)."""
    from spiffe_bridge.filemode import parse_mode

    return _usage(parse_mode, text)


def owner(text: str) -> Owner:
    """``USER[:GROUP]``, each a name or a number."""
    from spiffe_bridge.relay.sockets import Owner

    return _usage(Owner.parse, text)


def boolean(text: str) -> bool:
    """Go's flag spelling of a boolean: true/false, 1/0, t/f, yes/no."""
    low = text.strip().lower()
    if low in ("true", "1", "t", "yes"):
        return True
    if low in ("false", "0", "f", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def argv(text: str) -> list[str]:
    """A command line split like a shell would split it (it is then run without one)."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot split {text!r}: {exc}") from None
    if not words:
        raise argparse.ArgumentTypeError("the restart command is empty")
    return words


def host_port(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (HOST defaults to 127.0.0.1; ``[::1]:PORT`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not [HOST:]PORT") from None
    if not 0 <= number <= 65535 or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not [HOST:]PORT")
    return host, number
