"""spiffe-bridge: make any workload or proxy speak SPIFFE.

The public surface is re-exported here and loaded lazily, so ``import
spiffe_bridge`` stays cheap (the sidecar's cold start counts): gRPC and
cryptography load only when a name that needs them is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> defining module
_EXPORTS: dict[str, str] = {
    "Endpoint": "spiffe_bridge.address",
    "SpiffeId": "spiffe_bridge.spiffeid",
    "TrustDomain": "spiffe_bridge.spiffeid",
    "Backoff": "spiffe_bridge.retry",
    "X509Svid": "spiffe_bridge.model",
    "X509Bundle": "spiffe_bridge.model",
    "X509Context": "spiffe_bridge.model",
    "X509BundleSet": "spiffe_bridge.model",
    "JwtSvid": "spiffe_bridge.jwt",
    "JwtBundle": "spiffe_bridge.jwt",
    "JwtBundleSet": "spiffe_bridge.jwt",
    "WorkloadClient": "spiffe_bridge.client.sync",
    "AsyncWorkloadClient": "spiffe_bridge.client.aio",
    "X509Source": "spiffe_bridge.sources.sync",
    "X509BundleSource": "spiffe_bridge.sources.sync",
    "JWTSource": "spiffe_bridge.sources.sync",
    "AsyncX509Source": "spiffe_bridge.sources.aio",
    "AsyncX509BundleSource": "spiffe_bridge.sources.aio",
    "AsyncJWTSource": "spiffe_bridge.sources.aio",
    "SourceStatus": "spiffe_bridge.sources.state",
    "SpiffeBridgeError": "spiffe_bridge.errors",
    "AddressError": "spiffe_bridge.errors",
    "SpiffeIdError": "spiffe_bridge.errors",
    "ValidationError": "spiffe_bridge.errors",
    "JwtSvidError": "spiffe_bridge.errors",
    "JwtSvidRejectedError": "spiffe_bridge.errors",
    "WorkloadApiError": "spiffe_bridge.errors",
    "AgentUnavailableError": "spiffe_bridge.errors",
    "NoIdentityError": "spiffe_bridge.errors",
    "InvalidArgumentError": "spiffe_bridge.errors",
    "UnimplementedError": "spiffe_bridge.errors",
    "StreamEndedError": "spiffe_bridge.errors",
    "SvidNotFoundError": "spiffe_bridge.errors",
    "DeadlineError": "spiffe_bridge.errors",
    "NotReadyError": "spiffe_bridge.errors",
    "SourceClosedError": "spiffe_bridge.errors",
}

__all__ = [
    "AddressError",
    "AgentUnavailableError",
    "AsyncJWTSource",
    "AsyncWorkloadClient",
    "AsyncX509BundleSource",
    "AsyncX509Source",
    "Backoff",
    "DeadlineError",
    "Endpoint",
    "InvalidArgumentError",
    "JWTSource",
    "JwtBundle",
    "JwtBundleSet",
    "JwtSvid",
    "JwtSvidError",
    "JwtSvidRejectedError",
    "NoIdentityError",
    "NotReadyError",
    "SourceClosedError",
    "SourceStatus",
    "SpiffeBridgeError",
    "SpiffeId",
    "SpiffeIdError",
    "StreamEndedError",
    "SvidNotFoundError",
    "TrustDomain",
    "UnimplementedError",
    "ValidationError",
    "WorkloadApiError",
    "WorkloadClient",
    "X509Bundle",
    "X509BundleSet",
    "X509BundleSource",
    "X509Context",
    "X509Source",
    "X509Svid",
]

if TYPE_CHECKING:
    from spiffe_bridge.address import Endpoint
    from spiffe_bridge.client.aio import AsyncWorkloadClient
    from spiffe_bridge.client.sync import WorkloadClient
    from spiffe_bridge.errors import (
        AddressError,
        AgentUnavailableError,
        DeadlineError,
        InvalidArgumentError,
        JwtSvidError,
        JwtSvidRejectedError,
        NoIdentityError,
        NotReadyError,
        SourceClosedError,
        SpiffeBridgeError,
        SpiffeIdError,
        StreamEndedError,
        UnimplementedError,
        ValidationError,
        WorkloadApiError,
    )
    from spiffe_bridge.jwt import JwtBundle, JwtBundleSet, JwtSvid
    from spiffe_bridge.model import X509Bundle, X509BundleSet, X509Context, X509Svid
    from spiffe_bridge.retry import Backoff
    from spiffe_bridge.sources.aio import AsyncJWTSource, AsyncX509BundleSource, AsyncX509Source
    from spiffe_bridge.sources.state import SourceStatus
    from spiffe_bridge.sources.sync import JWTSource, X509BundleSource, X509Source
    from spiffe_bridge.spiffeid import SpiffeId, TrustDomain


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'spiffe_bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
