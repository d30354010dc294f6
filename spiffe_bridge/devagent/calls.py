"""What answering one Workload API call needs from the dev agent: the servicer's whole interface.

``servicer.py`` depends on ``AgentCalls`` only, and the agent's state offers it as
``AgentState.call_desk`` (a ``CallDesk``), so neither side touches the other's internals.
A call goes: ``count_call``, ``take_error``, ``open_call``, ``await_first``, then for a
stream ``next_outgoing`` / ``record_sent`` until it ends, and ``close_call``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge._wire import Rpc

from ._streams import Outgoing, Signal, StreamHandle, StreamTable
from .faults import FaultPlan, InjectedError, RawResponse


class AgentCalls(Protocol):
    """The agent as one gRPC handler sees it; every method is safe from any thread."""

    @property
    def generation(self) -> int:
        """The serving generation; a server captures it at start, ``stop()`` makes it stale."""
        ...

    @property
    def denied(self) -> bool:
        """True while callers must get PermissionDenied."""
        ...

    def count_call(self, rpc: Rpc) -> None:
        """Count an arriving call (before any check, so rejected calls count too)."""
        ...

    def take_error(self, rpc: Rpc) -> InjectedError | None:
        """The scripted failure this call must end with, if any (consumed)."""
        ...

    def take_scripted_response(self, rpc: Rpc) -> RawResponse | None:
        """The scripted raw answer of a unary call, if any (consumed)."""
        ...

    def open_call(self, rpc: Rpc, generation: int) -> StreamHandle | None:
        """A handle for this call (streams start with the full state queued); None if stopping."""
        ...

    def close_call(self, handle: StreamHandle) -> None:
        """The call is over; safe to call more than once."""
        ...

    def await_first(self, handle: StreamHandle) -> bool:
        """Wait out hang and delay faults before the first answer; False if the call ended."""
        ...

    def next_outgoing(self, handle: StreamHandle) -> Outgoing | Signal:
        """Block until a stream has a message to send, must be denied, or must end."""
        ...

    def record_sent(self, rpc: Rpc, summary: str, stream_id: int | None = None) -> None:
        """Count and log one answer handed to gRPC."""
        ...

    def closes_after_message(self, rpc: Rpc) -> bool:
        """True if streams of ``rpc`` must end (status OK) after each message."""
        ...

    def jwt_svid_response(self, audience: list[str], spiffe_id: str) -> pb.JWTSVIDResponse:
        """JWT-SVIDs for all identities or the one asked for; LookupError if there is none."""
        ...

    def validate_jwt_svid(self, token: str, audience: str) -> tuple[str, dict[str, Any]]:
        """(SPIFFE ID, claims) of a valid JWT-SVID; ``JwtSvidError`` otherwise."""
        ...


class Issuer(Protocol):
    """The part of the agent that answers with identities (``AgentState`` is one)."""

    @property
    def denied(self) -> bool: ...

    def jwt_svid_response(self, audience: list[str], spiffe_id: str) -> pb.JWTSVIDResponse: ...

    def validate_jwt_svid(self, token: str, audience: str) -> tuple[str, dict[str, Any]]: ...


class CallDesk:
    """``AgentCalls`` made of the agent's parts: its stream table, fault plans and issuer."""

    def __init__(
        self,
        cond: threading.Condition,
        streams: StreamTable,
        faults: Mapping[Rpc, FaultPlan],
        issuer: Issuer,
    ) -> None:
        self._cond = cond
        self._streams = streams
        self._faults = faults
        self._issuer = issuer

    @property
    def generation(self) -> int:
        return self._streams.generation

    @property
    def denied(self) -> bool:
        return self._issuer.denied

    def count_call(self, rpc: Rpc) -> None:
        self._streams.count_call(rpc)

    def take_error(self, rpc: Rpc) -> InjectedError | None:
        with self._cond:
            return self._faults[rpc].take_error()

    def take_scripted_response(self, rpc: Rpc) -> RawResponse | None:
        with self._cond:
            return self._faults[rpc].take_raw()

    def open_call(self, rpc: Rpc, generation: int) -> StreamHandle | None:
        return self._streams.open(rpc, generation)

    def close_call(self, handle: StreamHandle) -> None:
        self._streams.close(handle)

    def await_first(self, handle: StreamHandle) -> bool:
        return self._streams.await_first(handle)

    def next_outgoing(self, handle: StreamHandle) -> Outgoing | Signal:
        return self._streams.next_outgoing(handle)

    def record_sent(self, rpc: Rpc, summary: str, stream_id: int | None = None) -> None:
        self._streams.record_sent(rpc, summary, stream_id)

    def closes_after_message(self, rpc: Rpc) -> bool:
        with self._cond:
            return self._faults[rpc].close_after_message

    def jwt_svid_response(self, audience: list[str], spiffe_id: str) -> pb.JWTSVIDResponse:
        return self._issuer.jwt_svid_response(audience, spiffe_id)

    def validate_jwt_svid(self, token: str, audience: str) -> tuple[str, dict[str, Any]]:
        return self._issuer.validate_jwt_svid(token, audience)
