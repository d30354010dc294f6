"""SPIFFE Broker API clients: one bridge fetching the identities of many workloads (docs/broker.md).

Names load lazily so that ``import spiffe_bridge.broker`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "BrokerClient": "sync",
    "AsyncBrokerClient": "aio",
    "WorkloadPIDReference": "reference",
    "KubernetesObjectReference": "reference",
    "Reference": "reference",
    "TlsTunnel": "tunnel",
    "agent_authorizer": "_core",
    "METADATA": "_core",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'spiffe_bridge.broker' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"spiffe_bridge.broker.{module}"), name)
    globals()[name] = value
    return value
