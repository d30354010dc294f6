"""Embedded SPIFFE Workload API server (dev agent) for demos and tests.

``DevAgent`` serves all five Workload API RPCs on a Unix socket from an
in-memory CA, with controls for rotation, federation, PermissionDenied windows
and fault injection. Imports are lazy so the pytest plugin loads cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spiffe_bridge._lazy import lazy_exports

__all__ = [
    "DevAgent",
    "Identity",
    "Rpc",
    "TrustDomainCA",
    "X509SVIDMaterial",
    "X509SvidMaterial",
]

if TYPE_CHECKING:
    from spiffe_bridge._wire import Rpc

    from .ca import TrustDomainCA, X509SVIDMaterial, X509SvidMaterial
    from .identity import Identity
    from .server import DevAgent
else:
    __getattr__, __dir__ = lazy_exports(
        globals(),
        {
            ".server": ["DevAgent"],
            ".identity": ["Identity"],
            "spiffe_bridge._wire": ["Rpc"],
            ".ca": ["TrustDomainCA", "X509SvidMaterial", "X509SVIDMaterial"],
        },
    )
