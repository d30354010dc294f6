"""Embedded SPIFFE Workload API server (dev agent) for demos and tests.

``DevAgent`` serves all five Workload API RPCs on a Unix socket from an
in-memory CA, with controls for rotation, federation, PermissionDenied windows
and fault injection. Imports are lazy so the pytest plugin loads cheaply.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ca import TrustDomainCA, X509SVIDMaterial
    from .faults import Rpc
    from .identity import Identity
    from .server import DevAgent

__all__ = [
    "DevAgent",
    "Identity",
    "Rpc",
    "TrustDomainCA",
    "X509SVIDMaterial",
]

_HOMES = {
    "DevAgent": ".server",
    "Identity": ".identity",
    "Rpc": ".faults",
    "TrustDomainCA": ".ca",
    "X509SVIDMaterial": ".ca",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
