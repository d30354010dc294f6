"""A small Prometheus text-exposition (format 0.0.4) renderer shared by the relay and the sidecar.

A handful of gauges and counters need no client library: each page is built at
scrape time from the component's own status, as a list of :class:`Family`.
Process metrics come from ``/proc`` (Linux; elsewhere they are left out) and
``build_info`` carries the version, so every page has the same standard series.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TYPES = ("counter", "gauge", "summary", "untyped")


@dataclass
class Family:
    """One metric: name, type, help and its samples (suffix, labels, value)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[str, dict[str, str], float | int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in _TYPES:
            raise ValueError(f"unknown metric type {self.kind!r}")

    def add(self, value: float | int, suffix: str = "", **labels: str) -> Family:
        """Add a sample (``suffix``: ``_sum``/``_count`` of a summary); returns self for chaining."""
        self.samples.append((suffix, labels, value))
        return self


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _value(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(families: Iterable[Family]) -> bytes:
    """The exposition text of ``families`` (a family without samples is left out)."""
    lines: list[str] = []
    for family in families:
        if not family.samples:
            continue
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, labels, value in family.samples:
            text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            lines.append(f"{family.name}{suffix}{{{text}}} {_value(value)}" if text else
                         f"{family.name}{suffix} {_value(value)}")  # fmt: skip
    return ("\n".join(lines) + "\n").encode() if lines else b""


def build_info(prefix: str) -> Family:
    """``<prefix>_build_info{version, python} 1``: which release is running."""
    from spiffe_bridge import __version__

    python = ".".join(str(part) for part in sys.version_info[:3])
    return Family(f"{prefix}_build_info", "gauge", "Always 1; the labels name the running release").add(
        1, version=__version__, python=python
    )


def process_families(proc: str = "/proc") -> list[Family]:
    """The standard ``process_*`` series of this process, read from ``/proc`` (empty elsewhere)."""
    try:
        with open(f"{proc}/self/stat", encoding="ascii") as f:
            stat = f.read()
        with open(f"{proc}/stat", encoding="ascii") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
        fds = len(os.listdir(f"{proc}/self/fd"))
    except (OSError, StopIteration, ValueError):
        return []
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    ticks = os.sysconf("SC_CLK_TCK")
    utime, stime, start, rss = int(fields[11]), int(fields[12]), int(fields[19]), int(fields[21])
    families = [
        Family("process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds").add(
            (utime + stime) / ticks
        ),
        Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes").add(
            rss * os.sysconf("SC_PAGE_SIZE")
        ),
        Family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes").add(int(fields[20])),
        Family("process_open_fds", "gauge", "Number of open file descriptors").add(fds),
        Family("process_start_time_seconds", "gauge", "Start time of the process since the epoch").add(
            boot + start / ticks
        ),
    ]
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft != resource.RLIM_INFINITY:
            families.append(Family("process_max_fds", "gauge", "Maximum number of open fds").add(soft))
    except (ImportError, OSError, ValueError):
        pass
    return families
