"""SPIFFE Broker API clients: one bridge fetching the identities of many workloads (docs/broker.md).

Names load lazily so that ``import spiffe_bridge.broker`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spiffe_bridge._lazy import lazy_exports

__all__ = [
    "METADATA",
    "AsyncBrokerClient",
    "BrokerClient",
    "KubernetesObjectReference",
    "Reference",
    "TlsTunnel",
    "WorkloadPIDReference",
    "agent_authorizer",
]

if TYPE_CHECKING:
    from spiffe_bridge.broker._core import METADATA, agent_authorizer
    from spiffe_bridge.broker.aio import AsyncBrokerClient
    from spiffe_bridge.broker.reference import KubernetesObjectReference, Reference, WorkloadPIDReference
    from spiffe_bridge.broker.sync import BrokerClient
    from spiffe_bridge.broker.tunnel import TlsTunnel
else:
    __getattr__, __dir__ = lazy_exports(
        globals(),
        {
            ".sync": ["BrokerClient"],
            ".aio": ["AsyncBrokerClient"],
            ".reference": ["WorkloadPIDReference", "KubernetesObjectReference", "Reference"],
            ".tunnel": ["TlsTunnel"],
            "._core": ["agent_authorizer", "METADATA"],
        },
    )
