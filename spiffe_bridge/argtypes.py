"""argparse types every command shares: durations with units, octal modes, owners by name or number.

Stated once so ``--timeout 5s`` means the same to fetch, inspect, doctor and the relay.
"""

from __future__ import annotations

import argparse

from spiffe_bridge.duration import parse_duration


def duration(text: str) -> float:
    """Seconds from ``30s``, ``5m``, ``1h30m``, ``250ms`` or a bare number of seconds."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_mode(text: str) -> int:
    """Permission bits from octal ``0640`` / ``640`` (0000-0777); ValueError says what is wrong."""
    try:
        value = int(text, 8)
    except ValueError:
        raise ValueError(f"mode {text!r} is not an octal number like 0640") from None
    if not 0 <= value <= 0o777:
        raise ValueError(f"mode {text!r} must be permission bits (0000-0777)")
    return value


def mode(text: str) -> int:
    """``parse_mode`` as an argparse type."""
    try:
        return parse_mode(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
