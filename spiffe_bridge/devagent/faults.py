"""Per-RPC fault plans: what the dev agent should do wrong on purpose.

Client reliability tests script failures here (errors, dropped or hanging
streams, malformed messages, slow first answers) instead of patching the
client. The agent's lock guards every plan; the plan's ``take_*`` methods
expect the caller to hold it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
from google.protobuf.message import Message

from spiffe_bridge._wire import Rpc

if TYPE_CHECKING:
    from .desk import CallDesk


# A response as sent on the wire: a message, or raw bytes that need not even
# be valid protobuf (to test the client's decoding failure path).
RawResponse = Message | bytes


@dataclass(frozen=True)
class InjectedError:
    """A status the next call of an RPC fails with."""

    code: grpc.StatusCode
    message: str = "injected failure"


@dataclass
class FaultPlan:
    """Misbehaviour scripted for one RPC."""

    errors: deque[InjectedError] = field(default_factory=deque)
    raw_next: deque[RawResponse] = field(default_factory=deque)
    close_after_message: bool = False
    hang: bool = False
    first_message_delay: float = 0.0

    def take_error(self) -> InjectedError | None:
        """The failure scripted for the next call, if any (consumed)."""
        return self.errors.popleft() if self.errors else None

    def take_raw(self) -> RawResponse | None:
        """The raw answer scripted for the next call, if any (consumed)."""
        return self.raw_next.popleft() if self.raw_next else None

    def clear(self) -> None:
        """Back to normal behaviour."""
        self.errors.clear()
        self.raw_next.clear()
        self.close_after_message = False
        self.hang = False
        self.first_message_delay = 0.0


def as_rpc(value: Rpc | str) -> Rpc:
    """Accept an Rpc or its wire name (``"FetchX509SVID"``)."""
    return value if isinstance(value, Rpc) else Rpc(value)


class FaultControls:
    """Mixin with the fault-injection controls of the dev agent."""

    _cond: threading.Condition
    _faults: dict[Rpc, FaultPlan]
    _desk: CallDesk

    def fail_next(
        self, rpc: Rpc | str, code: grpc.StatusCode, message: str = "injected failure", times: int = 1
    ) -> None:
        """The next ``times`` calls of ``rpc`` fail with ``code``/``message``."""
        self.inject_errors(rpc, [(code, message)] * times)

    def inject_errors(self, rpc: Rpc | str, errors: Iterable[tuple[grpc.StatusCode, str]]) -> None:
        """Queue a sequence of failures, one per upcoming call of ``rpc``."""
        with self._cond:
            self._faults[as_rpc(rpc)].errors.extend(InjectedError(c, m) for c, m in errors)

    def close_after_each_message(self, rpc: Rpc | str, enabled: bool = True) -> None:
        """End each stream of ``rpc`` (status OK) right after one message."""
        with self._cond:
            self._faults[as_rpc(rpc)].close_after_message = enabled
            self._cond.notify_all()

    def hang(self, rpc: Rpc | str, enabled: bool = True) -> None:
        """Accept calls of ``rpc`` but answer nothing until disabled, cancelled or the agent stops."""
        with self._cond:
            self._faults[as_rpc(rpc)].hang = enabled
            self._cond.notify_all()

    def delay_first_message(self, rpc: Rpc | str, seconds: float) -> None:
        """Wait ``seconds`` before the first message (or unary answer) of each new ``rpc`` call."""
        with self._cond:
            self._faults[as_rpc(rpc)].first_message_delay = seconds

    def respond_next_with(self, rpc: Rpc | str, message: RawResponse) -> None:
        """The next call of ``rpc`` gets ``message`` (or raw bytes) as its (first) answer."""
        with self._cond:
            self._faults[as_rpc(rpc)].raw_next.append(message)

    def push_raw(self, rpc: Rpc | str, message: RawResponse) -> int:
        """Send ``message`` as-is on every open ``rpc`` stream; returns how many."""
        rpc = as_rpc(rpc)
        if not rpc.streaming:
            raise ValueError(f"{rpc} is not a streaming RPC; use respond_next_with")
        return self._desk.push_raw(rpc, message)

    def clear_faults(self, rpc: Rpc | str | None = None) -> None:
        """Remove scripted faults for one RPC or all."""
        with self._cond:
            for r in [as_rpc(rpc)] if rpc is not None else list(Rpc):
                self._faults[r].clear()
            self._cond.notify_all()
