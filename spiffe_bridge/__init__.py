"""spiffe-bridge: make any workload or proxy speak SPIFFE.

The public surface is re-exported here and loaded lazily (``spiffe_bridge._lazy``),
so ``import spiffe_bridge`` stays cheap (the sidecar's cold start counts): gRPC and
cryptography load only when a name that needs them is first used. Another agent
embeds the writers through the same names: ``render_x509`` / ``render_jwt`` turn
material into ``FileSpec`` lists and ``FileSetWriter`` writes them atomically
(docs/library.md, "Embedding").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spiffe_bridge._lazy import lazy_exports

__version__ = "0.1.0"

__all__ = [
    "X509_FORMATS",
    "AddressError",
    "AgentUnavailableError",
    "AsyncJWTSource",
    "AsyncJwtSource",
    "AsyncWorkloadClient",
    "AsyncX509BundleSource",
    "AsyncX509Source",
    "Backoff",
    "ConfigError",
    "DeadlineError",
    "Endpoint",
    "FederatedLayout",
    "FileSetWriter",
    "FileSpec",
    "FormatError",
    "HclError",
    "InvalidArgumentError",
    "JWTSource",
    "JwtBundle",
    "JwtBundleSet",
    "JwtOptions",
    "JwtSource",
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
    "WriteError",
    "WriteResult",
    "X509Bundle",
    "X509BundleSet",
    "X509BundleSource",
    "X509Context",
    "X509Options",
    "X509Source",
    "X509Svid",
    "render_jwt",
    "render_x509",
]

if TYPE_CHECKING:
    from spiffe_bridge.address import Endpoint
    from spiffe_bridge.client.aio import AsyncWorkloadClient
    from spiffe_bridge.client.sync import WorkloadClient
    from spiffe_bridge.errors import (
        AddressError,
        AgentUnavailableError,
        ConfigError,
        DeadlineError,
        HclError,
        InvalidArgumentError,
        JwtSvidError,
        JwtSvidRejectedError,
        NoIdentityError,
        NotReadyError,
        SourceClosedError,
        SpiffeBridgeError,
        SpiffeIdError,
        StreamEndedError,
        SvidNotFoundError,
        UnimplementedError,
        ValidationError,
        WorkloadApiError,
    )
    from spiffe_bridge.fileset import FileSetWriter, FileSpec, WriteError, WriteResult
    from spiffe_bridge.formats import (
        X509_FORMATS,
        FederatedLayout,
        FormatError,
        JwtOptions,
        X509Options,
        render_jwt,
        render_x509,
    )
    from spiffe_bridge.jwtbundle import JwtBundle, JwtBundleSet
    from spiffe_bridge.jwtsvid import JwtSvid
    from spiffe_bridge.retry import Backoff
    from spiffe_bridge.sources.aio import (
        AsyncJWTSource,
        AsyncJwtSource,
        AsyncX509BundleSource,
        AsyncX509Source,
    )
    from spiffe_bridge.sources.state import SourceStatus
    from spiffe_bridge.sources.sync import JWTSource, JwtSource, X509BundleSource, X509Source
    from spiffe_bridge.spiffeid import SpiffeId, TrustDomain
    from spiffe_bridge.x509bundle import X509Bundle, X509BundleSet
    from spiffe_bridge.x509context import X509Context
    from spiffe_bridge.x509svid import X509Svid
else:
    __getattr__, __dir__ = lazy_exports(
        globals(),
        {
            ".address": ["Endpoint"],
            ".spiffeid": ["SpiffeId", "TrustDomain"],
            ".retry": ["Backoff"],
            ".x509svid": ["X509Svid"],
            ".x509bundle": ["X509Bundle", "X509BundleSet"],
            ".x509context": ["X509Context"],
            ".jwtsvid": ["JwtSvid"],
            ".jwtbundle": ["JwtBundle", "JwtBundleSet"],
            ".client.sync": ["WorkloadClient"],
            ".client.aio": ["AsyncWorkloadClient"],
            ".sources.sync": ["X509Source", "X509BundleSource", "JwtSource", "JWTSource"],
            ".sources.aio": ["AsyncX509Source", "AsyncX509BundleSource", "AsyncJwtSource", "AsyncJWTSource"],
            ".sources.state": ["SourceStatus"],
            ".fileset": ["FileSetWriter", "FileSpec", "WriteResult", "WriteError"],
            ".formats": [
                "render_x509",
                "render_jwt",
                "X509Options",
                "JwtOptions",
                "X509_FORMATS",
                "FederatedLayout",
                "FormatError",
            ],
            ".errors": [
                "SpiffeBridgeError",
                "AddressError",
                "SpiffeIdError",
                "ValidationError",
                "JwtSvidError",
                "JwtSvidRejectedError",
                "WorkloadApiError",
                "AgentUnavailableError",
                "NoIdentityError",
                "InvalidArgumentError",
                "UnimplementedError",
                "StreamEndedError",
                "SvidNotFoundError",
                "DeadlineError",
                "NotReadyError",
                "SourceClosedError",
                "ConfigError",
                "HclError",
            ],
        },
    )
