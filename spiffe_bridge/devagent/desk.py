"""The calls the dev agent is answering, and the counters tests wait on instead of sleeping.

``CallDesk`` implements ``calls.AgentCalls`` for the servicer: it owns every call handle, the
server generation and the call/stream/message counters, consumes the scripted faults, and
queues pushes when the agent's state changes. ``StreamCounters`` is the read-only face of it
that ``DevAgent`` offers tests. Everything uses the agent's one condition variable, so a state
change and the push it causes are atomic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge._wire import Rpc

from .calls import CallHandle, Outgoing, Signal
from .faults import FaultPlan, InjectedError, RawResponse, as_rpc

_log = logging.getLogger("spiffe_bridge.devagent")
DEFAULT_WAIT = 10.0


class Issuer(Protocol):
    """What the desk passes on to the agent's identities (``AgentState`` is one)."""

    @property
    def denied(self) -> bool: ...

    def jwt_svid_response(self, audience: list[str], spiffe_id: str) -> pb.JWTSVIDResponse: ...

    def validate_jwt_svid(self, token: str, audience: str) -> tuple[str, dict[str, Any]]: ...


class CallDesk:
    """Every call being answered, the server generation, and how many calls, streams and messages.

    The agent supplies its fault plans, its identities (``issuer``) and ``full_state``, which
    builds the message a stream of an RPC sends after a change. Implements ``calls.AgentCalls``.
    """

    def __init__(
        self,
        cond: threading.Condition,
        faults: Mapping[Rpc, FaultPlan],
        issuer: Issuer,
        full_state: Callable[[Rpc], Outgoing],
    ) -> None:
        self._cond = cond
        self._faults = faults
        self._issuer = issuer
        self._full_state = full_state
        self._handles: dict[int, CallHandle] = {}
        self._next_id = 1
        self._generation = 0
        #: Calls received, streams ever opened, responses handed to gRPC; per RPC, read under the lock.
        self.calls: Counter[Rpc] = Counter()
        self.opened: Counter[Rpc] = Counter()
        self.sent: Counter[Rpc] = Counter()

    # ----- admission and scripted faults (calls.AgentCalls) -----
    @property
    def denied(self) -> bool:
        return self._issuer.denied

    def count_call(self, rpc: Rpc) -> None:
        with self._cond:
            self.calls[rpc] += 1
            self._cond.notify_all()

    def take_error(self, rpc: Rpc) -> InjectedError | None:
        with self._cond:
            return self._faults[rpc].take_error()

    def take_scripted_response(self, rpc: Rpc) -> RawResponse | None:
        with self._cond:
            return self._faults[rpc].take_raw()

    def closes_after_message(self, rpc: Rpc) -> bool:
        with self._cond:
            return self._faults[rpc].close_after_message

    def record_sent(self, rpc: Rpc, summary: str, stream_id: int | None = None) -> None:
        with self._cond:
            self.sent[rpc] += 1
            self._cond.notify_all()
        where = f" stream #{stream_id}" if stream_id is not None else ""
        _log.info("pushed %s%s: %s", rpc, where, summary)

    # ----- call handles (calls.AgentCalls) -----
    @property
    def generation(self) -> int:
        """Bumped by every ``end_all``; handles of an older generation are over."""
        with self._cond:
            return self._generation

    def open_call(self, rpc: Rpc, generation: int) -> CallHandle | None:
        """A stream is registered, with a pending scripted answer and then the full state queued.

        A unary call's handle is not registered: it only lets the call wait out hang and delay.
        """
        with self._cond:
            if generation != self._generation:
                return None
            if not rpc.streaming:
                return CallHandle(0, rpc, generation)
            handle = CallHandle(self._next_id, rpc, generation)
            self._next_id += 1
            raw = self._faults[rpc].take_raw()
            if raw is not None:
                handle.outbox.append(raw)
            handle.outbox.append(Signal.STATE)
            self._handles[handle.id] = handle
            self.opened[rpc] += 1
            self._cond.notify_all()
            return handle

    def close_call(self, handle: CallHandle) -> None:
        with self._cond:
            handle.ended = True
            self._handles.pop(handle.id, None)
            self._cond.notify_all()

    def _over(self, handle: CallHandle) -> bool:
        return handle.ended or handle.generation != self._generation

    def await_first(self, handle: CallHandle) -> bool:
        with self._cond:
            plan = self._faults[handle.rpc]
            deadline = time.monotonic() + plan.first_message_delay
            while True:
                if self._over(handle):
                    return False
                remaining = deadline - time.monotonic()
                if not plan.hang and remaining <= 0:
                    return True
                self._cond.wait(remaining if remaining > 0 else None)

    def next_outgoing(self, handle: CallHandle) -> Outgoing | Signal:
        with self._cond:
            while True:
                if self._over(handle):
                    return Signal.END
                if self._issuer.denied:
                    return Signal.DENY
                if handle.outbox and not self._faults[handle.rpc].hang:
                    item = handle.outbox.popleft()
                    if item is Signal.STATE:
                        return self._full_state(handle.rpc)
                    assert not isinstance(item, Signal)
                    return Outgoing(item, f"raw {type(item).__name__} ({_size(item)} bytes)")
                self._cond.wait()

    # ----- answers (calls.AgentCalls), passed on to the agent's identities -----
    def jwt_svid_response(self, audience: list[str], spiffe_id: str) -> pb.JWTSVIDResponse:
        return self._issuer.jwt_svid_response(audience, spiffe_id)

    def validate_jwt_svid(self, token: str, audience: str) -> tuple[str, dict[str, Any]]:
        return self._issuer.validate_jwt_svid(token, audience)

    # ----- used by the agent: open streams, pushes, stopping -----
    def open_count(self, rpc: Rpc | None = None) -> int:
        """Streams open now (of ``rpc``, or all)."""
        with self._cond:
            return sum(1 for s in self._handles.values() if rpc is None or s.rpc is rpc)

    def broadcast(self, rpcs: Iterable[Rpc]) -> None:
        """Queue a full-state push on every open stream of ``rpcs``."""
        wanted = set(rpcs)
        with self._cond:
            for stream in self._handles.values():
                if stream.rpc in wanted and (not stream.outbox or stream.outbox[-1] is not Signal.STATE):
                    stream.outbox.append(Signal.STATE)
            self._cond.notify_all()

    def push_raw(self, rpc: Rpc, message: RawResponse) -> int:
        """Queue ``message`` as-is on every open ``rpc`` stream; returns how many."""
        with self._cond:
            targets = [s for s in self._handles.values() if s.rpc is rpc]
            for stream in targets:
                stream.outbox.append(message)
            self._cond.notify_all()
            return len(targets)

    def end_all(self) -> None:
        """End every handle and start a new generation (the server is stopping)."""
        with self._cond:
            self._generation += 1
            for handle in self._handles.values():
                handle.ended = True
            self._handles.clear()
            self._cond.notify_all()


def _size(item: RawResponse) -> int:
    return len(item) if isinstance(item, bytes) else item.ByteSize()


class StreamCounters:
    """Mixin: call/stream/message counters of the agent and blocking waits on them."""

    _cond: threading.Condition
    _desk: CallDesk

    def calls(self, rpc: Rpc | str) -> int:
        """Calls received for ``rpc``, including rejected ones."""
        with self._cond:
            return self._desk.calls[as_rpc(rpc)]

    def open_streams(self, rpc: Rpc | str | None = None) -> int:
        """Streams currently open (for one RPC or all)."""
        return self._desk.open_count(None if rpc is None else as_rpc(rpc))

    def streams_opened(self, rpc: Rpc | str) -> int:
        """Streams ever opened for ``rpc`` (grows on every reconnect)."""
        with self._cond:
            return self._desk.opened[as_rpc(rpc)]

    def messages_sent(self, rpc: Rpc | str) -> int:
        """Responses handed to gRPC for ``rpc`` (stream messages and unary answers)."""
        with self._cond:
            return self._desk.sent[as_rpc(rpc)]

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float = DEFAULT_WAIT, what: str = "condition"
    ) -> None:
        """Block until ``predicate()`` holds (re-checked on every state change)."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(f"dev agent: timed out after {timeout}s waiting for {what}")

    def wait_for_calls(self, rpc: Rpc | str, n: int, timeout: float = DEFAULT_WAIT) -> None:
        """Wait until ``rpc`` has been called at least ``n`` times."""
        self.wait_until(lambda: self.calls(rpc) >= n, timeout, f"{n} {rpc} calls")

    def wait_for_streams(self, n: int, timeout: float = DEFAULT_WAIT, rpc: Rpc | str | None = None) -> None:
        """Wait until at least ``n`` streams (of ``rpc``, or any) are open."""
        what = f"{n} open {rpc or 'any'} streams"
        self.wait_until(lambda: self.open_streams(rpc) >= n, timeout, what)

    def wait_for_no_streams(self, timeout: float = DEFAULT_WAIT, rpc: Rpc | str | None = None) -> None:
        """Wait until no stream (of ``rpc``, or any) is open."""
        self.wait_until(lambda: self.open_streams(rpc) == 0, timeout, "all streams to close")

    def wait_for_streams_opened(self, rpc: Rpc | str, n: int, timeout: float = DEFAULT_WAIT) -> None:
        """Wait until ``n`` streams of ``rpc`` were opened in total (reconnects count)."""
        what = f"{n} {rpc} streams opened"
        self.wait_until(lambda: self.streams_opened(rpc) >= n, timeout, what)

    def wait_for_messages(self, rpc: Rpc | str, n: int, timeout: float = DEFAULT_WAIT) -> None:
        """Wait until ``n`` responses of ``rpc`` were delivered in total."""
        self.wait_until(lambda: self.messages_sent(rpc) >= n, timeout, f"{n} {rpc} messages")
