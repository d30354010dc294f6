"""What answering one Workload API call needs from the dev agent: the servicer's whole interface.

``servicer.py`` depends on ``AgentCalls`` only; the agent offers it as ``AgentState.call_desk``
(a ``desk.CallDesk``), so neither side touches the other's internals. A call goes:
``count_call``, ``take_error``, ``open_call``, ``await_first``, then for a stream
``next_outgoing`` and ``record_sent`` until it ends, and ``close_call``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge._wire import Rpc

from .faults import InjectedError, RawResponse


class Signal(Enum):
    """What a stream handler must do instead of sending a message."""

    END = "end"  # client gone or agent stopping: return quietly
    DENY = "deny"  # no identity for the caller: abort with PermissionDenied
    STATE = "state"  # outbox marker: send the full current state


@dataclass(frozen=True)
class Outgoing:
    """A message for one stream plus a log line without key material."""

    payload: RawResponse
    summary: str


@dataclass(eq=False)
class CallHandle:
    """One call being answered: an open server stream (``id`` > 0) or a unary call (``id`` 0)."""

    id: int
    rpc: Rpc
    generation: int
    outbox: deque[RawResponse | Signal] = field(default_factory=deque)
    ended: bool = False


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

    def open_call(self, rpc: Rpc, generation: int) -> CallHandle | None:
        """A handle for this call (a stream starts with the full state queued); None if stopping."""
        ...

    def close_call(self, handle: CallHandle) -> None:
        """The call is over; safe to call more than once."""
        ...

    def await_first(self, handle: CallHandle) -> bool:
        """Wait out hang and delay faults before the first answer; False if the call ended."""
        ...

    def next_outgoing(self, handle: CallHandle) -> Outgoing | Signal:
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
