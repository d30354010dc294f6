"""What the sync and async clients share: requests, decoding, error mapping, retry decisions.

Only the blocking I/O differs between the two clients; everything that can be
decided without waiting lives here, so both behave identically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from spiffe_bridge import jwt, model
from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge._wire import METADATA, SERVICE_PATH, Rpc
from spiffe_bridge.address import Endpoint, resolve
from spiffe_bridge.errors import (
    AgentUnavailableError,
    DeadlineError,
    InvalidArgumentError,
    JwtSvidError,
    JwtSvidRejectedError,
    NoIdentityError,
    UnimplementedError,
    ValidationError,
    WorkloadApiError,
)
from spiffe_bridge.retry import CHANNEL_OPTIONS, Backoff
from spiffe_bridge.spiffeid import SpiffeId

log = logging.getLogger("spiffe_bridge.client")

#: What ValidateJWTSVID calls are reported as (an InvalidArgument answer then means a bad token).
VALIDATION = "JWT-SVID validation"
#: Default deadline for one-shot calls (socket wait included).
DEFAULT_TIMEOUT = 30.0
#: How long a stream must stay up after its first valid message to count as healthy.
HEALTHY_STREAM_SECONDS = 1.0

T = TypeVar("T")
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
    model.context_from_message,
    "X.509 SVIDs",
    pb.X509SVIDResponse.FromString,
)
X509_BUNDLES = StreamSpec(
    Rpc.FETCH_X509_BUNDLES,
    pb.X509BundlesRequest(),
    model.bundles_from_message,
    "X.509 bundles",
    pb.X509BundlesResponse.FromString,
)
JWT_BUNDLES = StreamSpec(
    Rpc.FETCH_JWT_BUNDLES,
    pb.JWTBundlesRequest(),
    jwt.bundles_from_message,
    "JWT bundles",
    pb.JWTBundlesResponse.FromString,
)


class StopSignal:
    """Ends a watch for a reason outside its stream (the Broker API: the referenced process exited).

    ``stop(reason)`` cancels the stream's current call; the watch then raises ``reason``
    instead of reconnecting. Thread-safe: ``stop`` may come from any thread.
    """

    def __init__(self) -> None:
        self.reason: Exception | None = None
        self._cancel: Callable[[], Any] | None = None

    def attach(self, cancel: Callable[[], Any]) -> None:
        """The watch's current call; cancelled at once if the signal already fired."""
        self._cancel = cancel
        if self.reason is not None:
            cancel()

    def stop(self, reason: Exception) -> None:
        """End the watch with ``reason``."""
        if self.reason is None:
            self.reason = reason
        cancel = self._cancel
        if cancel is not None:
            cancel()


class ReconnectCounter:
    """Numbers the reconnect attempts of one watch, for ``Backoff.delay``.

    Failed connects count up as usual. After a stream that delivered and then stayed
    up for ``HEALTHY_STREAM_SECONDS`` the count starts over: an agent restart is
    followed at once. A stream that delivered but failed sooner (an agent restarting
    again) waits at most the initial backoff. A stream the agent *closed* (status OK)
    that soon counts as one more in a streak, so an agent that ends every stream
    right after its first message gets a growing backoff instead of a hot loop.
    """

    def __init__(self) -> None:
        self.attempt = 0
        self._streak = 0
        self._healthy_since: float | None = None

    def delivered(self) -> None:
        """The current stream delivered a valid message."""
        if self._healthy_since is None:
            self._healthy_since = time.monotonic()

    def ended(self, closed_by_agent: bool) -> int:
        """The current stream ended; returns the attempt number of the next connect."""
        since, self._healthy_since = self._healthy_since, None
        if since is None:
            self.attempt += 1
        elif time.monotonic() - since >= HEALTHY_STREAM_SECONDS:
            self._streak, self.attempt = 0, 1
        elif closed_by_agent:
            self._streak += 1
            self.attempt = self._streak + 1
        else:
            self.attempt = 2
        return self.attempt


_CODE_ERRORS: dict[grpc.StatusCode, type[WorkloadApiError]] = {
    grpc.StatusCode.UNAVAILABLE: AgentUnavailableError,
    grpc.StatusCode.PERMISSION_DENIED: NoIdentityError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineError,
}


class ClientCore:
    """Configuration and the non-blocking half of a Workload API client.

    The Broker API client shares it with its own ``endpoint``, security header
    ``metadata``, ``api`` name (for messages) and extra gRPC code mappings.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        backoff: Backoff | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        on_error: ErrorCallback | None = None,
        endpoint: Endpoint | None = None,
        metadata: tuple[tuple[str, str], ...] = METADATA,
        api: str = "Workload API",
        code_errors: dict[grpc.StatusCode, type[WorkloadApiError]] | None = None,
    ) -> None:
        self.endpoint: Endpoint = endpoint or resolve(address)
        self.backoff = backoff or Backoff()
        self.timeout = timeout
        self.on_error = on_error
        self.channel_options = CHANNEL_OPTIONS
        self.metadata = metadata
        self.api = api
        self.code_errors = {**_CODE_ERRORS, **(code_errors or {})}

    def call_timeout(self, timeout: float | None) -> float | None:
        """The per-call deadline: the argument, else the client's default."""
        return self.timeout if timeout is None else timeout

    def decode(self, spec: StreamSpec[T], message: Any) -> T:
        """Validate one streamed message; grpc.aio hands over None for bytes that do not parse."""
        if message is None:
            raise ValidationError(f"agent sent {spec.what} that do not parse as a {self.api} message")
        return spec.decode(message)

    def error_from_rpc(self, exc: grpc.RpcError, what: str) -> WorkloadApiError:
        """Map a gRPC failure to a typed error that says what to check."""
        code = exc.code() if hasattr(exc, "code") else None
        details = (exc.details() if hasattr(exc, "details") else "") or ""
        cls = self.code_errors.get(code, WorkloadApiError) if code is not None else WorkloadApiError
        if cls is InvalidArgumentError and what == VALIDATION:
            return JwtSvidRejectedError(
                f"the agent rejected the JWT-SVID: {details}", code=code, details=details
            )
        if cls is DeadlineError:
            message = f"no answer for {what} from {self.endpoint} in time"
        elif cls is AgentUnavailableError and "connect" in details.lower():
            message = f"cannot reach the {self.api} at {self.endpoint}: {details}"
        else:
            name = code.name if code is not None else "UNKNOWN"
            message = f"{what} from {self.endpoint} failed: {name}: {details}"
        return cls(message, code=code, details=details)

    def report(self, exc: Exception, on_error: ErrorCallback | None = None) -> None:
        """Log a skipped update or a reconnect reason and hand it to the error callback."""
        level = logging.WARNING if isinstance(exc, ValidationError) else logging.INFO
        log.log(level, "%s: %s", type(exc).__name__, exc)
        callback = on_error or self.on_error
        if callback is not None:
            try:
                callback(exc)
            except Exception:
                log.exception("error callback raised; ignored")

    # -- request builders and decoders for the unary calls ------------------------------

    @staticmethod
    def jwt_svid_request(
        audience: str, extra_audiences: tuple[str, ...], spiffe_id: str | SpiffeId | None
    ) -> Any:
        """Build a JWTSVIDRequest; an empty audience is refused locally (the agent would too)."""
        audiences = [audience, *extra_audiences]
        if not all(isinstance(a, str) and a for a in audiences):
            raise ValueError("JWT-SVID audiences must be non-empty strings")
        return pb.JWTSVIDRequest(audience=audiences, spiffe_id=str(spiffe_id) if spiffe_id else "")

    @staticmethod
    def decode_jwt_svids(message: Any) -> list[jwt.JwtSvid]:
        """Parse the JWT-SVIDs the agent minted; raise ValidationError when there are none."""
        if not message.svids:
            raise ValidationError("JWTSVIDResponse has no SVIDs")
        out = []
        for item in message.svids:
            svid = jwt.JwtSvid.parse_insecure(item.svid, item.hint)
            if str(svid.spiffe_id) != item.spiffe_id:
                raise ValidationError(f"JWT-SVID subject differs from its SPIFFE ID {item.spiffe_id}")
            out.append(svid)
        return out

    @staticmethod
    def pick_jwt_svid(svids: list[jwt.JwtSvid], hint: str | None) -> jwt.JwtSvid:
        """The first SVID, or the first with ``hint``."""
        for svid in svids:
            if hint is None or svid.hint == hint:
                return svid
        from spiffe_bridge.errors import SvidNotFoundError

        have = ", ".join(f"{s.spiffe_id} (hint {s.hint!r})" for s in svids)
        raise SvidNotFoundError(f"no JWT-SVID with hint {hint!r}; the agent sent: {have}")

    @staticmethod
    def validate_request(token: str, audience: str) -> Any:
        """Build a ValidateJWTSVIDRequest."""
        if not token or not audience:
            raise ValueError("token and audience must be non-empty")
        return pb.ValidateJWTSVIDRequest(audience=audience, svid=token)

    @staticmethod
    def decode_validation(token: str, message: Any) -> jwt.JwtSvid:
        """Turn the agent's ValidateJWTSVID answer into a JwtSvid."""
        try:
            claims = json_format.MessageToDict(message.claims)
        except ValueError:  # e.g. a non-finite number, which JSON cannot carry
            raise JwtSvidError("the agent's claims for the token are not valid JSON values") from None
        sid, aud, exp = jwt._check_claims({**claims, "sub": message.spiffe_id})
        return jwt.JwtSvid(sid, token, aud, exp, claims)
