"""Sources: block for the first update, keep the last good one, dedupe, isolate subscribers."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from spiffe_bridge import AsyncX509Source, JWTSource, SourceStatus, X509Source
from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.errors import NoIdentityError, NotReadyError
from spiffe_bridge.retry import Backoff
from spiffe_bridge.x509context import X509Context

FAST = Backoff(initial=0.01, maximum=0.05)


@pytest.mark.dev_agent(identities=["spiffe://example.org/a#a", "spiffe://example.org/b#b"])
def test_x509_source_basics(dev_agent: DevAgent) -> None:
    with X509Source(dev_agent.address, timeout=10) as source:
        assert source.status is SourceStatus.READY
        assert str(source.svid().spiffe_id) == "spiffe://example.org/a"
        assert str(source.svid(hint="b").spiffe_id) == "spiffe://example.org/b"
        assert source.bundle_for("example.org") is not None


def test_subscribers_dedupe_and_isolation(dev_agent: DevAgent) -> None:
    seen: list[int] = []
    got = threading.Event()
    blocker = threading.Event()
    with X509Source(dev_agent.address, backoff=FAST) as source:

        def raising(ctx: X509Context) -> None:
            raise RuntimeError("subscriber bug")

        def blocking(ctx: X509Context) -> None:
            blocker.wait(10)

        def recording(ctx: X509Context) -> None:
            seen.append(ctx.default_svid.leaf.serial_number)
            got.set()

        source.subscribe(raising)
        source.subscribe(blocking)
        source.subscribe(recording)
        assert got.wait(5)  # the current context is delivered on subscribe
        got.clear()
        first = seen[-1]
        # An agent restart re-delivers identical material: no notification.
        dev_agent.restart()
        dev_agent.wait_for_streams(1)
        dev_agent.wait_for_messages("FetchX509SVID", 2)
        source.wait_for(lambda c: source.state.reconnects >= 1)
        dev_agent.rotate()
        assert got.wait(5)
        assert len(seen) == 2 and seen[0] == first and seen[1] != first
        assert source.state.updates == 2
        blocker.set()


def test_bad_update_keeps_last_good(dev_agent: DevAgent) -> None:
    with X509Source(dev_agent.address) as source:
        good = source.context
        dev_agent.push_raw("FetchX509SVID", pb.X509SVIDResponse())
        dev_agent.push_raw("FetchX509SVID", b"\xff\xfe not protobuf")
        dev_agent.rotate()
        rotated = source.wait_for(lambda c: c.digest != good.digest, timeout=10)
        assert rotated.default_svid.leaf.serial_number == dev_agent.svids[0].serial_number
        assert source.state.rejected >= 1
        assert source.status is SourceStatus.READY


def test_identity_lost_then_regained(dev_agent: DevAgent) -> None:
    statuses: list[SourceStatus] = []
    with X509Source(dev_agent.address, backoff=FAST) as source:
        source.state.add_status_listener(lambda s, e: statuses.append(s))
        dev_agent.deny()
        deadline = time.monotonic() + 10
        while source.status is not SourceStatus.IDENTITY_LOST and time.monotonic() < deadline:
            dev_agent.wait_for_calls("FetchX509SVID", dev_agent.calls("FetchX509SVID") + 1)
        assert source.status is SourceStatus.IDENTITY_LOST
        with pytest.raises(NoIdentityError):
            source.svid()
        dev_agent.allow()
        source.wait_for(lambda c: source.status is SourceStatus.READY, timeout=10)
        assert SourceStatus.IDENTITY_LOST in statuses and statuses[-1] is SourceStatus.READY


def test_not_ready_within_timeout(dev_agent: DevAgent) -> None:
    dev_agent.deny()
    with pytest.raises(NotReadyError, match=r"no identity issued|no matching update"):
        X509Source(dev_agent.address, timeout=0.5, backoff=FAST)


def test_jwt_source(dev_agent: DevAgent) -> None:
    with JWTSource(dev_agent.address) as source:
        svid = source.fetch_svid("svc")
        assert source.fetch_svid("svc") is svid  # cached until half-life
        assert dev_agent.calls("FetchJWTSVID") == 1
        assert source.validate(svid.token, "svc").spiffe_id == svid.spiffe_id
        old = source.bundles.digest
        dev_agent.rotate_jwt_bundle()
        source.wait_for(lambda b: b.digest != old, timeout=10)


@pytest.mark.dev_agent(jwt_ttl=2)
def test_jwt_source_refreshes_at_half_life(dev_agent: DevAgent) -> None:
    with JWTSource(dev_agent.address) as source:
        first = source.fetch_svid("svc")
        deadline = time.monotonic() + 5
        while source.fetch_svid("svc") is first and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for wall-clock time to pass is the behaviour under test
        assert source.fetch_svid("svc") is not first
        assert time.time() < first.expiry  # refreshed before expiry


async def test_async_source(dev_agent: DevAgent) -> None:
    seen: list[int] = []
    async with AsyncX509Source(dev_agent.address) as source:
        source.subscribe(lambda c: seen.append(c.default_svid.leaf.serial_number))
        first = source.svid().leaf.serial_number
        import asyncio

        await asyncio.to_thread(dev_agent.rotate)
        ctx = await asyncio.wait_for(
            source.wait_for(lambda c: c.default_svid.leaf.serial_number != first), 10
        )
        assert seen == [ctx.default_svid.leaf.serial_number]
        assert source.status is SourceStatus.READY


def test_unavailable_burst_is_retried(dev_agent: DevAgent) -> None:
    dev_agent.inject_errors("FetchX509SVID", [(grpc.StatusCode.UNAVAILABLE, "rate limited")] * 5)
    with X509Source(dev_agent.address, backoff=FAST, timeout=10) as source:
        assert source.state.reconnects == 5
