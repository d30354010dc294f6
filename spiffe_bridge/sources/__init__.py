"""Always-current sources of SPIFFE material: X.509 contexts, X.509 bundles, JWT bundles.

The asyncio sources (``AsyncX509Source``, ``AsyncX509BundleSource``,
``AsyncJwtSource``) are the implementation; ``X509Source``,
``X509BundleSource`` and ``JwtSource`` are blocking facades that run one on a
private event-loop thread. All keep the last valid update while the client
reconnects, announce only changed updates, and raise ``SourceClosedError``
from every getter once closed. ``protocols`` holds the typed interfaces to
accept in your own code. See docs/library.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spiffe_bridge._lazy import lazy_exports

__all__ = [
    "AsyncJWTSource",
    "AsyncJwtSource",
    "AsyncX509BundleSource",
    "AsyncX509Source",
    "JWTBundleSourceLike",
    "JWTSource",
    "JwtBundleSourceLike",
    "JwtSource",
    "SourceState",
    "SourceStatus",
    "X509BundleSetSourceLike",
    "X509BundleSource",
    "X509BundleSourceLike",
    "X509Source",
    "X509SourceLike",
]

if TYPE_CHECKING:
    from spiffe_bridge.sources.aio import (
        AsyncJWTSource,
        AsyncJwtSource,
        AsyncX509BundleSource,
        AsyncX509Source,
    )
    from spiffe_bridge.sources.protocols import (
        JWTBundleSourceLike,
        JwtBundleSourceLike,
        X509BundleSetSourceLike,
        X509BundleSourceLike,
        X509SourceLike,
    )
    from spiffe_bridge.sources.state import SourceState, SourceStatus
    from spiffe_bridge.sources.sync import JWTSource, JwtSource, X509BundleSource, X509Source
else:
    __getattr__, __dir__ = lazy_exports(
        globals(),
        {
            ".aio": ["AsyncX509Source", "AsyncX509BundleSource", "AsyncJwtSource", "AsyncJWTSource"],
            ".sync": ["X509Source", "X509BundleSource", "JwtSource", "JWTSource"],
            ".state": ["SourceState", "SourceStatus"],
            ".protocols": [
                "X509SourceLike",
                "X509BundleSourceLike",
                "X509BundleSetSourceLike",
                "JwtBundleSourceLike",
                "JWTBundleSourceLike",
            ],
        },
    )
