"""Serve the Workload API under its own name and under the package-qualified alias.

The Workload API proto declares no package, so its RPC paths are
``/SpiffeWorkloadAPI/<Method>``. linkerd2-proxy v2.329 and v2.330 called
``/spiffe.workloadapi.SpiffeWorkloadAPI/<Method>`` instead (linkerd2 issue 14730), which
SPIRE answers with Unimplemented. Our servers (dev agent, relay) answer both, with the
same handlers, so such a proxy works behind them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

#: The service name every spec-following client calls.
SERVICE = "SpiffeWorkloadAPI"
#: The package-qualified name some linkerd2-proxy releases call.
QUALIFIED_SERVICE = "spiffe.workloadapi.SpiffeWorkloadAPI"


class _AliasedHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Looks ``/<name>/<Method>`` up in one handler table for every accepted service name."""

    def __init__(self, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        self._by_path = {
            f"/{name}/{method}": handler
            for name in (SERVICE, QUALIFIED_SERVICE)
            for method, handler in handlers.items()
        }

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._by_path.get(handler_call_details.method)


def workload_api_handler(
    handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]],
) -> grpc.GenericRpcHandler[Any, Any]:
    """A generic handler serving ``handlers`` (method name -> handler) under both service names."""
    return _AliasedHandler(handlers)
