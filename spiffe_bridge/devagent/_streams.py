"""Open-stream bookkeeping, and counters tests wait on instead of sleeping."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from spiffe_bridge._wire import Rpc

from .faults import RawResponse, as_rpc

DEFAULT_WAIT = 10.0


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
class StreamHandle:
    """One open server stream and the messages queued for it."""

    id: int
    rpc: Rpc
    epoch: int
    outbox: deque[RawResponse | Signal] = field(default_factory=deque)
    ended: bool = False


class StreamCounters:
    """Mixin: call/stream/message counters and blocking waits on them."""

    _cond: threading.Condition
    _streams: dict[int, StreamHandle]
    _calls: Counter[Rpc]
    _opened: Counter[Rpc]
    _sent: Counter[Rpc]

    def calls(self, rpc: Rpc | str) -> int:
        """Calls received for ``rpc``, including rejected ones."""
        with self._cond:
            return self._calls[as_rpc(rpc)]

    def open_streams(self, rpc: Rpc | str | None = None) -> int:
        """Streams currently open (for one RPC or all)."""
        with self._cond:
            want = None if rpc is None else as_rpc(rpc)
            return sum(1 for s in self._streams.values() if want is None or s.rpc is want)

    def streams_opened(self, rpc: Rpc | str) -> int:
        """Streams ever opened for ``rpc`` (grows on every reconnect)."""
        with self._cond:
            return self._opened[as_rpc(rpc)]

    def messages_sent(self, rpc: Rpc | str) -> int:
        """Responses handed to gRPC for ``rpc`` (stream messages and unary answers)."""
        with self._cond:
            return self._sent[as_rpc(rpc)]

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
