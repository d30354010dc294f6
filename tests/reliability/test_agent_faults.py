"""Agent faults: restarts, a missing or silent socket, dropped streams, denials, rate limiting.

Every wait is on an event (dev agent counters, source state, status listener);
nothing sleeps to synchronise.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import grpc
import pytest
from reliability_support import FAST, RecordingBackoff, context_problems, scale

from spiffe_bridge import SourceStatus, WorkloadClient, X509Source
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.errors import DeadlineError, NoIdentityError, NotReadyError
from spiffe_bridge.sources.state import SourceState
from spiffe_bridge.x509context import X509Context

X509 = "FetchX509SVID"


class StatusLog:
    """Records a source's status changes; ``wait_for`` blocks until a status is reached."""

    def __init__(self, state: SourceState[X509Context]) -> None:
        self.seen: list[SourceStatus] = [state.status]
        self._state = state
        self._cond = threading.Condition()
        state.add_status_listener(self._on_status)

    def _on_status(self, status: SourceStatus, exc: Exception | None) -> None:
        with self._cond:
            self.seen.append(status)
            self._cond.notify_all()

    def wait_for(self, status: SourceStatus, timeout: float = 10.0) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: self._state.status is status, timeout)
        assert ok, f"status {status} not reached; seen {self.seen}"


class Notifications:
    """A subscriber that counts deliveries and checks every delivered context."""

    def __init__(self) -> None:
        self.digests: list[bytes] = []
        self.problems: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, ctx: X509Context) -> None:
        problems = context_problems(ctx)
        with self._cond:
            self.digests.append(ctx.digest)
            self.problems += problems
            self._cond.notify_all()

    def wait_count(self, n: int, timeout: float = 10.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.digests) >= n, timeout), self.digests


def _collect(client: WorkloadClient, out: list[bytes], cond: threading.Condition) -> None:
    for ctx in client.watch_x509_contexts():
        with cond:
            out.append(ctx.digest)
            cond.notify_all()


def test_restart_many_times_during_watch(dev_agent: DevAgent) -> None:
    """Every restart recovers; identical re-deliveries are not announced again."""
    restarts = scale(50, 500)
    before = dev_agent.x509_svid_response().SerializeToString(deterministic=True)
    raw: list[bytes] = []
    raw_cond = threading.Condition()
    notes = Notifications()
    with (
        WorkloadClient(dev_agent.address, backoff=FAST) as client,
        X509Source(dev_agent.address, backoff=FAST) as source,
    ):
        threading.Thread(target=_collect, args=(client, raw, raw_cond), daemon=True).start()
        source.subscribe(notes)
        notes.wait_count(1)
        with raw_cond:
            assert raw_cond.wait_for(lambda: len(raw) == 1, 10)
        for i in range(restarts):
            opened = dev_agent.streams_opened(X509)
            dev_agent.restart()
            dev_agent.wait_for_streams_opened(X509, opened + 2)  # the raw watch and the source
            source.wait_for(
                lambda c, n=i + 1: source.state.reconnects >= n and source.status is SourceStatus.READY
            )
            with raw_cond:
                assert raw_cond.wait_for(lambda n=i + 2: len(raw) >= n, 10)
        # The agent re-delivered the very same material after each restart ...
        assert dev_agent.x509_svid_response().SerializeToString(deterministic=True) == before
        assert len(set(raw)) == 1 and len(raw) == restarts + 1
        # ... so the source announced it once, and counted every reconnect.
        assert source.state.updates == 1 and notes.digests == raw[:1]
        assert source.state.reconnects >= restarts
        dev_agent.rotate()
        notes.wait_count(2)
        assert source.state.updates == 2 and notes.problems == []


def test_socket_missing_at_start_then_appearing(tmp_short: str) -> None:
    path = os.path.join(tmp_short, "later", "agent.sock")
    agent = DevAgent(path)
    with WorkloadClient(agent.address, backoff=FAST) as client:
        with pytest.raises(DeadlineError, match="no answer"):
            client.fetch_x509_context(timeout=0.3)
        with X509Source(agent.address, backoff=FAST, timeout=0) as source:
            assert source.status is SourceStatus.STARTING
            with pytest.raises(NotReadyError):
                source.wait_for(timeout=0.3)
            fetched: list[X509Context] = []
            fetcher = threading.Thread(target=lambda: fetched.append(client.fetch_x509_context(timeout=30)))
            fetcher.start()
            with agent:
                ctx = source.wait_for(timeout=10)
                fetcher.join(10)
                assert fetched and fetched[0].digest == ctx.digest
                assert context_problems(ctx) == []


@pytest.fixture
def silent_socket(tmp_short: str) -> Iterator[str]:
    """A Unix socket that accepts connections (kernel backlog) but never speaks HTTP/2."""
    path = os.path.join(tmp_short, "silent.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(64)
    try:
        yield f"unix://{path}"
    finally:
        sock.close()


def test_socket_that_accepts_but_never_answers(silent_socket: str) -> None:
    with WorkloadClient(silent_socket) as client:
        with pytest.raises(DeadlineError):
            client.fetch_x509_context(timeout=0.5)
        with pytest.raises(DeadlineError):
            client.fetch_jwt_svid("aud", timeout=0.5)
    with X509Source(silent_socket, backoff=FAST, timeout=0) as source:
        with pytest.raises(NotReadyError, match="no matching update"):
            source.wait_for(timeout=0.5)
        assert source.status is SourceStatus.STARTING
        with pytest.raises(NotReadyError):
            _ = source.context


def test_agent_that_hangs_the_rpc(dev_agent: DevAgent) -> None:
    dev_agent.hang(X509)
    with WorkloadClient(dev_agent.address) as client, pytest.raises(DeadlineError):
        client.fetch_x509_context(timeout=0.5)
    with X509Source(dev_agent.address, backoff=FAST, timeout=0) as source:
        dev_agent.wait_for_streams(1, rpc=X509)
        with pytest.raises(NotReadyError):
            source.wait_for(timeout=0.5)
        assert source.status is SourceStatus.STARTING
        dev_agent.hang(X509, False)
        assert context_problems(source.wait_for(timeout=10)) == []


def test_stream_closed_after_each_message(dev_agent: DevAgent) -> None:
    """Reconnects, announces once, still sees rotations, and backs off instead of spinning."""
    backoff = RecordingBackoff(initial=0.01, maximum=0.05)
    notes = Notifications()
    dev_agent.close_after_each_message(X509)
    with X509Source(dev_agent.address, backoff=backoff) as source:
        source.subscribe(notes)
        dev_agent.wait_for_streams_opened(X509, 20)
        source.wait_for(lambda c: source.state.reconnects >= 19)
        assert source.state.updates == 1
        assert len(notes.digests) == 1
        dev_agent.rotate()
        notes.wait_count(2)
        source.wait_for(lambda c: c.digest == notes.digests[-1])
        assert notes.problems == []
        # A stream that ends right after its first message is not a healthy stream: the
        # client must back off (growing attempts), not reconnect in a hot loop.
        assert max(backoff.attempts()) >= 5, backoff.attempts()[:30]


def test_permission_denied_at_start(dev_agent: DevAgent) -> None:
    backoff = RecordingBackoff(initial=0.01, maximum=0.05)
    dev_agent.deny()
    with X509Source(dev_agent.address, backoff=backoff, timeout=0) as source:
        log = StatusLog(source.state)
        log.wait_for(SourceStatus.IDENTITY_LOST)
        with pytest.raises(NoIdentityError):
            source.svid()
        calls = dev_agent.calls(X509)
        dev_agent.wait_for_calls(X509, calls + 3)
        assert backoff.attempts()[:3] == [1, 2, 3]  # retried with growing backoff
        dev_agent.allow()
        log.wait_for(SourceStatus.READY)
        assert context_problems(source.context) == []


def test_permission_denied_mid_stream(dev_agent: DevAgent) -> None:
    notes = Notifications()
    with X509Source(dev_agent.address, backoff=FAST) as source:
        log = StatusLog(source.state)
        source.subscribe(notes)
        notes.wait_count(1)
        dev_agent.deny()
        log.wait_for(SourceStatus.IDENTITY_LOST)
        with pytest.raises(NoIdentityError):
            source.svid()  # the spec: stop using all SVIDs
        dev_agent.allow()
        log.wait_for(SourceStatus.READY)
        assert source.context.digest == notes.digests[0]
        dev_agent.rotate()
        notes.wait_count(2)
        assert notes.problems == []


def test_unavailable_bursts_are_retried_with_backoff(dev_agent: DevAgent) -> None:
    burst = [(grpc.StatusCode.UNAVAILABLE, "rate limited")] * 8
    backoff = RecordingBackoff(initial=0.01, maximum=0.05)
    dev_agent.inject_errors(X509, burst)
    with X509Source(dev_agent.address, backoff=backoff, timeout=10) as source:
        assert backoff.attempts() == list(range(1, 9))
        assert source.state.reconnects == 8
        # A second burst mid-stream (the agent restarts and load-sheds): same recovery.
        log = StatusLog(source.state)
        dev_agent.inject_errors(X509, burst)
        dev_agent.restart()
        source.wait_for(lambda c: source.state.reconnects >= 17)
        log.wait_for(SourceStatus.READY)
        assert SourceStatus.RECONNECTING in log.seen
        # The brief healthy stream in between keeps the count low (no 30 s wait), and
        # the attempts grow again through the burst.
        second = backoff.attempts()[8:]
        assert second[0] <= 2 and second == list(range(second[0], second[0] + 9)), second
        assert context_problems(source.context) == []
        assert source.state.updates == 1
