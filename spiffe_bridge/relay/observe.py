"""Timestamps and counters that make the relay's own overhead measurable.

An observer is a plain callable that gets a ``RelayEvent`` at three points of
every update's trip through the relay: when the upstream update arrived
(``received``; already validated unless ``forward_before_verify``), when its bytes
went into the shared slot (``published``), and when each downstream stream
handed them to gRPC (``sent``).
Times are ``time.monotonic_ns()`` (CLOCK_MONOTONIC on Linux, comparable
across processes on one host), so a benchmark can line them up with its own
clock readings. Observers run on the relay's event loop: keep them short and
non-blocking; an observer that raises is logged and ignored.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("spiffe_bridge.relay")


class Stage(enum.StrEnum):
    """Where an update is on its way through the relay."""

    RECEIVED = "received"  # upstream update arrived
    PUBLISHED = "published"  # its bytes went into the shared slot
    SENT = "sent"  # one downstream stream handed it to gRPC


@dataclass(frozen=True, slots=True)
class RelayEvent:
    """One timestamped step; ``stream`` is the downstream stream number for ``sent``."""

    kind: str
    stage: Stage
    version: int
    t_ns: int
    stream: int = 0


Observer = Callable[[RelayEvent], None]


def notify(observer: Observer | None, event: RelayEvent) -> None:
    """Hand ``event`` to ``observer`` if there is one; never let it break the relay."""
    if observer is None:
        return
    try:
        observer(event)
    except Exception:
        log.exception("relay observer raised; ignored")


@dataclass(frozen=True, slots=True)
class FeedStats:
    """Counters of one stream kind at the time of the snapshot."""

    version: int
    serving: bool
    #: "serving", "holding" (upstream lost, last state still served) or the status code name.
    status: str
    open_streams: int
    messages_sent: int
    upstream_updates: int
    #: Upstream updates that failed validation (refused or taken back).
    invalid_updates: int
    last_received_ns: int


@dataclass(frozen=True, slots=True)
class RelayStats:
    """Counters of one relay socket, by Workload API method name."""

    #: The socket's path.
    socket: str
    feeds: dict[str, FeedStats]
    forwarded_calls: int
    rejected_calls: int
