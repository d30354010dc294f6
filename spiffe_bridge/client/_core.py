"""What the sync and async clients share: settings, requests, error mapping, retry decisions.

Only the blocking I/O differs between the two clients; everything that can be
decided without waiting lives here, so both behave identically. Messages are
decoded by ``_decode`` (through the stream specs of ``streams``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeVar

import grpc

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge._wire import METADATA
from spiffe_bridge.address import Endpoint, resolve
from spiffe_bridge.client.streams import ErrorCallback, StreamSpec
from spiffe_bridge.errors import (
    AgentUnavailableError,
    DeadlineError,
    InvalidArgumentError,
    JwtSvidRejectedError,
    NoIdentityError,
    StreamEndedError,
    UnimplementedError,
    ValidationError,
    WorkloadApiError,
)
from spiffe_bridge.jwtsvid import JwtSvid
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

    def accept(
        self, spec: StreamSpec[T], message: Any, counter: ReconnectCounter, on_error: ErrorCallback | None
    ) -> T | None:
        """A watched message, decoded and counted as delivered; None when it was reported and skipped.

        Both clients' stream loops take every message through here, so an invalid update
        is skipped (the last good one stays) the same way in each.
        """
        try:
            item = self.decode(spec, message)
        except ValidationError as exc:
            self.report(exc, on_error)
            return None
        counter.delivered()
        return item

    def stream_ended(self, spec: StreamSpec[Any]) -> StreamEndedError:
        """Why a stream that the agent closed without an error ended (the watch reconnects)."""
        return StreamEndedError(f"agent at {self.endpoint} ended the {spec.what} stream")

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

    # -- request builders for the unary calls, and picking one of the SVIDs minted ---------

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
    def pick_jwt_svid(svids: list[JwtSvid], hint: str | None) -> JwtSvid:
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
