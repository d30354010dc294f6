"""The Workload API's streams as values: which RPC, which request, how each message is decoded.

A ``StreamSpec`` is what a client's ``watch`` takes; ``X509_CONTEXTS``,
``X509_BUNDLES`` and ``JWT_BUNDLES`` are the three streams of the Workload API
(the Broker API builds its own), and ``unvalidated`` turns one into the stream
of the agent's bytes that relays re-serve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge._wire import SERVICE_PATH, Rpc
from spiffe_bridge.client._decode import decode_jwt_bundles, decode_x509_bundles, decode_x509_context
from spiffe_bridge.errors import ValidationError

__all__ = [
    "JWT_BUNDLES",
    "X509_BUNDLES",
    "X509_CONTEXTS",
    "ErrorCallback",
    "StreamSpec",
    "Unvalidated",
    "unvalidated",
]

T = TypeVar("T")
#: Called with each skipped update (ValidationError) and each reason a watch reconnects.
ErrorCallback = Callable[[Exception], None]


@dataclass(frozen=True, slots=True)
class StreamSpec(Generic[T]):
    """One server-streaming RPC: method name, request, how gRPC parses a message, and its decoder.

    ``deserialize`` None hands ``decode`` the message bytes as received (see ``unvalidated``).
    ``service`` is the path prefix of the method (the Broker API has its own).
    """

    method: str
    request: Any
    decode: Callable[[Any], T]
    what: str
    deserialize: Callable[[bytes], Any] | None
    service: str = SERVICE_PATH

    def callable(self, channel: Any) -> Any:
        """The channel's multi-callable for this stream (a sync or a ``grpc.aio`` channel)."""
        return channel.unary_stream(
            self.service + self.method,
            request_serializer=type(self.request).SerializeToString,
            response_deserializer=self.deserialize,
        )


@dataclass(frozen=True, slots=True)
class Unvalidated:
    """One stream message as the agent sent it: its bytes and the parsed protobuf, not yet validated."""

    data: bytes
    message: Any


def unvalidated(spec: StreamSpec[Any]) -> StreamSpec[Unvalidated]:
    """The same stream, handing over each message parsed but not validated, with its bytes.

    For relays, which re-serve the agent's bytes and validate them with ``spec.decode``
    while the clients already have them. Bytes that are not a protobuf message of the
    stream's type are still refused (reported as ValidationError, then skipped).
    """
    parse = spec.deserialize
    if parse is None:
        raise ValueError(f"{spec.method}: the stream already hands over bytes")

    def decode(data: bytes) -> Unvalidated:
        try:
            return Unvalidated(data, parse(data))
        except DecodeError:
            raise ValidationError(
                f"agent sent {spec.what} that do not parse as a Workload API message"
            ) from None

    return StreamSpec(spec.method, spec.request, decode, spec.what, None, spec.service)


X509_CONTEXTS = StreamSpec(
    Rpc.FETCH_X509_SVID,
    pb.X509SVIDRequest(),
    decode_x509_context,
    "X.509 SVIDs",
    pb.X509SVIDResponse.FromString,
)
X509_BUNDLES = StreamSpec(
    Rpc.FETCH_X509_BUNDLES,
    pb.X509BundlesRequest(),
    decode_x509_bundles,
    "X.509 bundles",
    pb.X509BundlesResponse.FromString,
)
JWT_BUNDLES = StreamSpec(
    Rpc.FETCH_JWT_BUNDLES,
    pb.JWTBundlesRequest(),
    decode_jwt_bundles,
    "JWT bundles",
    pb.JWTBundlesResponse.FromString,
)
