"""Fan-out: one upstream push reaches many downstream streams, and the relay's timestamps show its cost."""

from __future__ import annotations

import asyncio
import statistics
import threading
from collections.abc import Callable

import grpc
import grpc.aio
import pytest
from _support.wire import HEADER
from relay_helpers import RelayFactory, serials

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.relay import Kind, RelayEvent, Stage

STREAMS = 100
CHANNELS = 10  # 10 connections x 10 streams, like separate client processes
BOUND = 10.0  # generous: the assertion is "all of them, in bounded time"; timings are reported


class Events:
    """Thread-safe log of relay events (the observer runs on the relay's loop thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[RelayEvent] = []

    def __call__(self, event: RelayEvent) -> None:
        with self._lock:
            self.items.append(event)

    def of(self, version: int, stage: Stage) -> list[RelayEvent]:
        with self._lock:
            return [
                e
                for e in self.items
                if e.kind == Kind.X509_SVID and e.version == version and e.stage == stage
            ]


async def _read_all(calls: list[grpc.aio.UnaryStreamCall[bytes, bytes]]) -> list[pb.X509SVIDResponse]:
    raw = await asyncio.wait_for(asyncio.gather(*(c.read() for c in calls)), BOUND)
    return [pb.X509SVIDResponse.FromString(r) for r in raw]  # type: ignore[arg-type]


async def test_rotation_reaches_100_streams(
    dev_agent: DevAgent, relay_factory: RelayFactory, record_property: Callable[[str, object], None]
) -> None:
    events = Events()
    relay = relay_factory(dev_agent.address, observer=events)
    relay.wait_serving()
    target = "unix:" + relay.socket_path
    channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
    try:
        methods = [ch.unary_stream("/SpiffeWorkloadAPI/FetchX509SVID") for ch in channels]
        calls = [methods[i % CHANNELS](b"", metadata=HEADER) for i in range(STREAMS)]
        first = await _read_all(calls)
        assert {serials(m)[0] for m in first} == {dev_agent.svids[0].serial_number}
        assert relay.stats().feeds[Kind.X509_SVID].open_streams == STREAMS

        loop = asyncio.get_running_loop()
        started = loop.time()
        (rotated,) = await loop.run_in_executor(None, dev_agent.rotate)
        second = await _read_all(calls)
        elapsed = loop.time() - started
        assert {serials(m)[0] for m in second} == {rotated.serial_number}
        assert {m.svids[0].x509_svid for m in second} == {rotated.chain_der()}

        version = relay.snapshot().version
        (received,) = events.of(version, Stage.RECEIVED)
        (published,) = events.of(version, Stage.PUBLISHED)
        sent = events.of(version, Stage.SENT)
        assert len({e.stream for e in sent}) == STREAMS
        assert received.t_ns <= published.t_ns <= min(e.t_ns for e in sent)
        spread = sorted((e.t_ns - received.t_ns) / 1e6 for e in sent)
        record_property("rotation_to_100_streams_s", round(elapsed, 4))
        record_property("relay_received_to_sent_p50_ms", round(statistics.median(spread), 3))
        record_property("relay_received_to_sent_max_ms", round(spread[-1], 3))
        print(
            f"100 streams: {elapsed * 1000:.1f} ms end to end; relay p50 {statistics.median(spread):.2f} ms"
        )

        assert dev_agent.open_streams("FetchX509SVID") == 1  # still one upstream stream
        assert dev_agent.streams_opened("FetchX509SVID") == 1
        for call in calls:
            call.cancel()
    finally:
        for ch in channels:
            await ch.close()


@pytest.mark.dev_agent(identities=["spiffe://example.org/a", "spiffe://example.org/b"])
async def test_slow_reader_gets_the_newest_state(dev_agent: DevAgent, relay_factory: RelayFactory) -> None:
    relay = relay_factory(dev_agent.address)
    relay.wait_serving()
    async with grpc.aio.insecure_channel("unix:" + relay.socket_path) as channel:
        call = channel.unary_stream("/SpiffeWorkloadAPI/FetchX509SVID")(b"", metadata=HEADER)
        await _read_all([call])
        last = None
        for _ in range(5):  # several rotations while the client does not read
            last = await asyncio.get_running_loop().run_in_executor(None, dev_agent.rotate)
        assert last is not None
        want = last[0].serial_number
        version = relay.wait_until(lambda s: s.version >= 6 or serials(_parse(s.payload))[0] == want).version
        assert version >= 2
        while True:  # intermediate states may be skipped, but the newest always arrives
            (message,) = await _read_all([call])
            if serials(message)[0] == want:
                break
        call.cancel()


def _parse(payload: bytes | None) -> pb.X509SVIDResponse:
    return pb.X509SVIDResponse.FromString(payload or b"")
