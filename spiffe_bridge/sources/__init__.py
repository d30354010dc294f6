"""Always-current sources of SPIFFE material: X.509 contexts, X.509 bundles, JWT bundles.

The asyncio sources (``AsyncX509Source``, ``AsyncX509BundleSource``,
``AsyncJWTSource``) are the implementation; ``X509Source``,
``X509BundleSource`` and ``JWTSource`` are blocking facades that run one on a
private event-loop thread. All keep the last valid update while the client
reconnects, announce only changed updates, and raise ``SourceClosedError``
from every getter once closed. ``protocols`` holds the typed interfaces to
accept in your own code. See docs/library.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spiffe_bridge.sources.aio import AsyncJWTSource, AsyncX509BundleSource, AsyncX509Source
    from spiffe_bridge.sources.protocols import (
        JWTBundleSourceLike,
        X509BundleSetSourceLike,
        X509BundleSourceLike,
        X509SourceLike,
    )
    from spiffe_bridge.sources.state import SourceState, SourceStatus
    from spiffe_bridge.sources.sync import JWTSource, X509BundleSource, X509Source

_HOMES = {
    "AsyncJWTSource": "spiffe_bridge.sources.aio",
    "AsyncX509BundleSource": "spiffe_bridge.sources.aio",
    "AsyncX509Source": "spiffe_bridge.sources.aio",
    "JWTBundleSourceLike": "spiffe_bridge.sources.protocols",
    "X509BundleSetSourceLike": "spiffe_bridge.sources.protocols",
    "X509BundleSourceLike": "spiffe_bridge.sources.protocols",
    "X509SourceLike": "spiffe_bridge.sources.protocols",
    "SourceState": "spiffe_bridge.sources.state",
    "SourceStatus": "spiffe_bridge.sources.state",
    "JWTSource": "spiffe_bridge.sources.sync",
    "X509BundleSource": "spiffe_bridge.sources.sync",
    "X509Source": "spiffe_bridge.sources.sync",
}

__all__ = [
    "AsyncJWTSource",
    "AsyncX509BundleSource",
    "AsyncX509Source",
    "JWTBundleSourceLike",
    "JWTSource",
    "SourceState",
    "SourceStatus",
    "X509BundleSetSourceLike",
    "X509BundleSource",
    "X509BundleSourceLike",
    "X509Source",
    "X509SourceLike",
]


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
