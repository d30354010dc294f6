"""Workload API relay: one upstream stream per kind, re-served on local Unix sockets.

``Relay`` (background thread) and ``AsyncRelay`` (your event loop) serve a
spec-compliant Workload API to any number of local clients from one upstream
connection, on one or more sockets (``Listener``), each optionally showing
only allowed SVIDs. See docs/relay.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spiffe_bridge.relay.core import AsyncRelay
    from spiffe_bridge.relay.feed import Kind, Snapshot
    from spiffe_bridge.relay.filter import SvidFilter
    from spiffe_bridge.relay.listener import Listener
    from spiffe_bridge.relay.observe import RelayEvent, RelayStats, Stage
    from spiffe_bridge.relay.runner import Relay

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

_HOMES = {
    "AsyncRelay": "spiffe_bridge.relay.core",
    "Kind": "spiffe_bridge.relay.feed",
    "Snapshot": "spiffe_bridge.relay.feed",
    "SvidFilter": "spiffe_bridge.relay.filter",
    "Listener": "spiffe_bridge.relay.listener",
    "RelayEvent": "spiffe_bridge.relay.observe",
    "RelayStats": "spiffe_bridge.relay.observe",
    "Stage": "spiffe_bridge.relay.observe",
    "Relay": "spiffe_bridge.relay.runner",
}


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
