"""Workload API relay: one upstream stream per kind, re-served on local Unix sockets.

``Relay`` (background thread) and ``AsyncRelay`` (your event loop) serve a
spec-compliant Workload API to any number of local clients from one upstream
connection, on one or more sockets (``Listener``), each optionally showing
only allowed SVIDs. See docs/relay.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spiffe_bridge._lazy import lazy_exports

__all__ = [
    "AsyncRelay",
    "Kind",
    "Listener",
    "Relay",
    "RelayEvent",
    "RelayStats",
    "Snapshot",
    "Stage",
    "SvidFilter",
]

if TYPE_CHECKING:
    from spiffe_bridge.relay.aio import AsyncRelay
    from spiffe_bridge.relay.feed import Kind, Snapshot
    from spiffe_bridge.relay.filter import SvidFilter
    from spiffe_bridge.relay.listener import Listener
    from spiffe_bridge.relay.observe import RelayEvent, RelayStats, Stage
    from spiffe_bridge.relay.sync import Relay
else:
    __getattr__, __dir__ = lazy_exports(
        globals(),
        {
            ".aio": ["AsyncRelay"],
            ".feed": ["Kind", "Snapshot"],
            ".filter": ["SvidFilter"],
            ".listener": ["Listener"],
            ".observe": ["RelayEvent", "RelayStats", "Stage"],
            ".sync": ["Relay"],
        },
    )
