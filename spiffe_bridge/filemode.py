"""File permission bits written as octal text (``0640``, ``640``), as socket and file options take them."""

from __future__ import annotations


def parse_mode(text: str) -> int:
    """Permission bits from octal ``0640`` / ``640`` (0000-0777); ValueError says what is wrong."""
    try:
        value = int(text, 8)
    except ValueError:
        raise ValueError(f"mode {text!r} is not an octal number like 0640") from None
    if not 0 <= value <= 0o777:
        raise ValueError(f"mode {text!r} must be permission bits (0000-0777)")
    return value
