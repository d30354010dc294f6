"""Human durations ("30s", "5m", "1h30m", "250ms") in seconds, as every option and config key takes them."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


def parse_duration(text: str) -> float:
    """Return the duration in seconds; a bare number means seconds.

    Raises ValueError for empty, negative or malformed input so argparse can
    report it as a usage error.
    """
    value = text.strip()
    if not value:
        raise ValueError("empty duration")
    try:
        seconds = float(value)
    except ValueError:
        if not _WHOLE.fullmatch(value):
            raise ValueError(f"invalid duration {text!r}; use e.g. 30s, 5m, 1h") from None
        seconds = sum(float(num) * _UNITS[unit] for num, unit in _PART.findall(value))
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"invalid duration {text!r}")
    return seconds
