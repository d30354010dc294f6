"""Typed errors: each carries what went wrong and what the user should check.

Workload API failures keep the gRPC status code (``code``) so callers can decide
without parsing messages; messages never contain key material or tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


class SpiffeBridgeError(Exception):
    """Base class of every error raised by spiffe-bridge."""


class AddressError(SpiffeBridgeError, ValueError):
    """The Workload API endpoint address is missing or not allowed by the endpoint spec."""


class SpiffeIdError(SpiffeBridgeError, ValueError):
    """A SPIFFE ID or trust domain does not follow the SPIFFE-ID spec."""


class ConfigError(SpiffeBridgeError, ValueError):
    """The configuration is invalid; the message names the key (and line when known)."""


class HclError(SpiffeBridgeError, ValueError):
    """The text is not valid HCL (for the sidecar's reader); the message names the line."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


class ValidationError(SpiffeBridgeError):
    """Material from the agent (SVID, bundle, JWKS, token) failed validation; it was not used."""


class JwtSvidError(ValidationError):
    """A JWT-SVID failed validation (signature, algorithm, audience, expiry, subject)."""


class SvidNotFoundError(SpiffeBridgeError, LookupError):
    """No SVID matches the requested hint or SPIFFE ID; the message lists the ones there are."""


class WorkloadApiError(SpiffeBridgeError):
    """A Workload API call failed; ``code`` is the gRPC status code (None for local causes)."""

    hint = "check the agent's logs"
    #: The gRPC code this class stands for when raised without one (None: a local cause).
    default_code: str | None = None

    def __init__(self, message: str, code: grpc.StatusCode | None = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details

    @property
    def retryable(self) -> bool:
        """Whether the endpoint spec says to retry this failure with backoff (``retry.STOP_CODES``)."""
        from spiffe_bridge.retry import code_retries

        return code_retries(self.code.name if self.code is not None else self.default_code)

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


class AgentUnavailableError(WorkloadApiError):
    """The agent could not be reached or is not ready (gRPC Unavailable, connection errors)."""

    hint = "is the SPIRE agent running and is the socket path right?"


class NoIdentityError(WorkloadApiError):
    """The agent has no identity for this workload (gRPC PermissionDenied)."""

    hint = "no identity issued: is a registration entry for this workload's selectors present?"


class InvalidArgumentError(WorkloadApiError):
    """The agent rejected the request (gRPC InvalidArgument); retrying does not help."""

    hint = "the request was rejected: missing security header or empty mandatory field"
    default_code = "INVALID_ARGUMENT"


class JwtSvidRejectedError(InvalidArgumentError, JwtSvidError):
    """The agent's ValidateJWTSVID refused the token: both an InvalidArgument answer and a bad JWT-SVID."""

    hint = "the agent found the token invalid for this audience"


class UnimplementedError(WorkloadApiError):
    """The agent does not implement this RPC (gRPC Unimplemented); retrying does not help."""

    hint = "the agent does not support this call"
    default_code = "UNIMPLEMENTED"


class StreamEndedError(WorkloadApiError):
    """The agent closed a stream; the client reconnects."""

    hint = "the agent restarted or closed the stream"


class DeadlineError(AgentUnavailableError):
    """No answer within the deadline: the socket accepted but nothing came back in time."""


class NotReadyError(SpiffeBridgeError, TimeoutError):
    """A source had no valid update within the requested time."""


class WorkloadNotFoundError(NoIdentityError):
    """The Broker API found no workload for the reference (gRPC NotFound): e.g. the PID has exited."""

    hint = "the referenced workload does not exist (has the process exited or been replaced?)"


class BrokerTlsError(AgentUnavailableError):
    """No mutual TLS with the Broker endpoint: it is not the authorized agent, or it refused our SVID."""

    hint = "check the agent's SPIFFE ID and that this bridge's SPIFFE ID is in the agent's broker allow-list"


class WorkloadNotEntitledError(NoIdentityError, ValidationError):
    """The Broker API answered with no SVIDs for the workload: it has no registration entry (yet).

    A ValidationError too, so a watch reports it and keeps the stream (the identity may
    still be issued); a one-shot fetch raises it as a NoIdentityError.
    """

    hint = "no identity for the referenced workload: is a registration entry for its selectors present?"


class WorkloadExitedError(WorkloadNotFoundError):
    """The process a Broker API watch referenced has exited; its identity ended with it."""

    hint = "a replaced process needs a new reference (the sidecar follows its pid file)"
    retryable = False


class SourceClosedError(SpiffeBridgeError):
    """The source was closed: it serves nothing any more, not even its last update (go-spiffe's rule)."""
