"""Lists in log lines and error messages, capped: a 5,000-SVID update must not log one 179 KB line."""

from __future__ import annotations

from collections.abc import Iterable

#: Items shown before the rest is only counted.
LIMIT = 10


def capped(items: Iterable[object], limit: int = LIMIT) -> str:
    """``a, b, c`` for a short list; ``a, …, j … and 4,990 more`` past ``limit`` items."""
    shown: list[str] = []
    left_out = 0
    for item in items:
        if len(shown) < limit:
            shown.append(str(item))
        else:
            left_out += 1
    text = ", ".join(shown)
    return f"{text} … and {left_out:,} more" if left_out else text
