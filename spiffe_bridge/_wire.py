"""The Workload API as it appears on the wire: service names, method names, the security header.

Stated once here for everything that calls or serves the API: the client, the relay,
the dev agent and ``doctor``. The proto declares no package, so RPC paths are
``/SpiffeWorkloadAPI/<Method>``; linkerd2-proxy v2.329 and v2.330 called
``/spiffe.workloadapi.SpiffeWorkloadAPI/<Method>`` instead (linkerd2 issue 14730), which
SPIRE answers with Unimplemented. Our servers answer both names with the same handlers.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

import grpc

#: The service name every spec-following client calls.
SERVICE = "SpiffeWorkloadAPI"
#: The package-qualified name some linkerd2-proxy releases call.
QUALIFIED_SERVICE = "spiffe.workloadapi.SpiffeWorkloadAPI"
#: Path prefix of the Workload API's RPCs.
SERVICE_PATH = f"/{SERVICE}/"

#: The security header every Workload API call must carry, and its only accepted value.
HEADER_KEY = "workload.spiffe.io"
HEADER_VALUE = "true"
#: The header as gRPC call metadata.
METADATA: tuple[tuple[str, str], ...] = ((HEADER_KEY, HEADER_VALUE),)
#: The details a server answers (InvalidArgument) when the header is missing, as SPIRE does.
MISSING_HEADER = "security header missing from request"


class Rpc(enum.StrEnum):
    """The five Workload API methods, valued by their wire names."""

    FETCH_X509_SVID = "FetchX509SVID"
    FETCH_X509_BUNDLES = "FetchX509Bundles"
    FETCH_JWT_SVID = "FetchJWTSVID"
    FETCH_JWT_BUNDLES = "FetchJWTBundles"
    VALIDATE_JWT_SVID = "ValidateJWTSVID"

    @property
    def streaming(self) -> bool:
        """True for the server-streaming methods."""
        return self in STREAMING_RPCS

    @property
    def path(self) -> str:
        """The RPC's full gRPC path under the spec's service name."""
        return SERVICE_PATH + self.value


STREAMING_RPCS = frozenset({Rpc.FETCH_X509_SVID, Rpc.FETCH_X509_BUNDLES, Rpc.FETCH_JWT_BUNDLES})


def has_header(metadata: Iterable[tuple[str, Any]] | None) -> bool:
    """True when the call carries the security header exactly once, with the accepted value."""
    return [v for k, v in (metadata or ()) if k == HEADER_KEY] == [HEADER_VALUE]


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
    """A generic handler serving ``handlers`` (method name, e.g. an Rpc -> handler) under both names."""
    return _AliasedHandler({str(rpc): handler for rpc, handler in handlers.items()})
