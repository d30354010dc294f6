"""Workload API clients: ``WorkloadClient`` (threads) and ``AsyncWorkloadClient`` (asyncio).

Also the client's public parts that other packages build on: the stream specs
(``streams``), ``StopSignal`` (``stop``), ``ClientCore`` (settings and error
mapping, which the Broker API client extends) and the decoders that turn
Workload API messages into model objects. Names load lazily, so importing the
package costs no gRPC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spiffe_bridge._lazy import lazy_exports

__all__ = [
    "JWT_BUNDLES",
    "X509_BUNDLES",
    "X509_CONTEXTS",
    "AsyncWorkloadClient",
    "ClientCore",
    "ErrorCallback",
    "StopSignal",
    "StreamSpec",
    "Unvalidated",
    "WorkloadClient",
    "decode_jwt_bundles",
    "decode_jwt_svids",
    "decode_jwt_validation",
    "decode_x509_bundles",
    "decode_x509_context",
    "unvalidated",
]

if TYPE_CHECKING:
    from spiffe_bridge.client._core import ClientCore
    from spiffe_bridge.client._decode import (
        decode_jwt_bundles,
        decode_jwt_svids,
        decode_jwt_validation,
        decode_x509_bundles,
        decode_x509_context,
    )
    from spiffe_bridge.client.aio import AsyncWorkloadClient
    from spiffe_bridge.client.stop import StopSignal
    from spiffe_bridge.client.streams import (
        JWT_BUNDLES,
        X509_BUNDLES,
        X509_CONTEXTS,
        ErrorCallback,
        StreamSpec,
        Unvalidated,
        unvalidated,
    )
    from spiffe_bridge.client.sync import WorkloadClient
else:
    __getattr__, __dir__ = lazy_exports(
        globals(),
        {
            ".sync": ["WorkloadClient"],
            ".aio": ["AsyncWorkloadClient"],
            ".streams": [
                "StreamSpec",
                "Unvalidated",
                "unvalidated",
                "X509_CONTEXTS",
                "X509_BUNDLES",
                "JWT_BUNDLES",
                "ErrorCallback",
            ],
            ".stop": ["StopSignal"],
            "._core": ["ClientCore"],
            "._decode": [
                "decode_x509_context",
                "decode_x509_bundles",
                "decode_jwt_bundles",
                "decode_jwt_svids",
                "decode_jwt_validation",
            ],
        },
    )
