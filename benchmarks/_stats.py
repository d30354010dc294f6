"""Small statistics and formatting helpers shared by every benchmark.

Why not ``statistics`` alone: the benchmarks need one consistent percentile
definition (nearest-rank, so p99 of 100 samples is the 99th smallest, never an
interpolated value nobody measured), seconds rendered in the unit that suits
them, and ratios that say which side is faster without a sign to decode.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of a non-empty sample; NaN when empty."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(samples: Sequence[float]) -> float:
    """The median; NaN for an empty sample (a benchmark that measured nothing says so)."""
    return statistics.median(samples) if samples else math.nan


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """n, median (= p50), p99, min and max of a sample, for the JSON results."""
    return {
        "n": len(samples),
        "p50": median(samples),
        "p99": percentile(samples, 99),
        "min": min(samples) if samples else math.nan,
        "max": max(samples) if samples else math.nan,
    }


def fmt_seconds(value: float | None) -> str:
    """Seconds in a readable unit: ``850 µs``, ``12.3 ms``, ``1.42 s``; ``n/a`` for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1.0:
        return f"{value * 1e3:.1f} ms" if value < 0.1 else f"{value * 1e3:.0f} ms"
    return f"{value:.2f} s"


def fmt_bytes(value: float | None) -> str:
    """Bytes as ``KiB``/``MiB`` with one decimal; ``n/a`` for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value < 1024:
        return f"{value:.0f} B"
    if value < 1024 * 1024:
        return f"{value / 1024:.1f} KiB"
    return f"{value / (1024 * 1024):.1f} MiB"


def fmt_rate(value: float | None) -> str:
    """Operations per second with thousands separators."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.0f}/s"


def ratio(ours: float | None, other: float | None, lower_is_better: bool = True) -> float | None:
    """How many times better ours is than ``other`` (>1: ours better); None when not comparable."""
    if ours is None or other is None or math.isnan(ours) or math.isnan(other) or ours <= 0 or other <= 0:
        return None
    return other / ours if lower_is_better else ours / other


def fmt_ratio(value: float | None) -> str:
    """``3.2x better`` / ``1.5x worse`` / ``n/a`` from a :func:`ratio` value."""
    if value is None:
        return "n/a"
    if value >= 1.0:
        return f"{value:.2f}x better"
    return f"{1.0 / value:.2f}x worse"


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (also readable as plain text on a terminal)."""
    cells = [list(columns), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def fmt_delta(value: float | None) -> str:
    """A signed difference of seconds: ``+3.6 ms`` / ``-1.2 ms``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return ("+" if value >= 0 else "-") + fmt_seconds(abs(value))
