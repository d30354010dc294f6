"""The sources package: the X.509 bundle and JWT sources, ``client=`` honoured, closed sources refuse."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from spiffe_bridge import (
    AddressError,
    AsyncJWTSource,
    AsyncWorkloadClient,
    AsyncX509BundleSource,
    AsyncX509Source,
    JwtBundleSet,
    JWTSource,
    JwtSvidError,
    SourceClosedError,
    SourceStatus,
    WorkloadClient,
    X509BundleSource,
    X509Source,
)
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.retry import Backoff
from spiffe_bridge.sources import X509BundleSetSourceLike, X509SourceLike

X509 = "FetchX509SVID"


class CountingBackoff(Backoff):
    """Records the attempts it was asked about: proves whose retry policy drove a stream."""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "asked", [])
        object.__setattr__(self, "lock", threading.Lock())

    def delay(self, attempt: int) -> float:
        with self.lock:  # type: ignore[attr-defined]
            self.asked.append(attempt)  # type: ignore[attr-defined]
        return super().delay(attempt)


def counting() -> CountingBackoff:
    return CountingBackoff(initial=0.01, maximum=0.02)


# -- closed sources refuse every getter ---------------------------------------------------------


def test_closed_sync_sources_raise_from_every_getter(dev_agent: DevAgent) -> None:
    x509 = X509Source(dev_agent.address, timeout=10)
    bundles = X509BundleSource(dev_agent.address, timeout=10)
    jwts = JWTSource(dev_agent.address, timeout=10)
    token = jwts.fetch_svid("svc").token
    for source in (x509, bundles, jwts):
        source.close()
        source.close()  # idempotent
        assert source.status is SourceStatus.CLOSED
        with pytest.raises(SourceClosedError):
            source.wait_for(None, timeout=1)
        with pytest.raises(SourceClosedError):
            source.subscribe(lambda _: None)
    for getter in (
        lambda: x509.context,
        lambda: x509.svid(),
        lambda: x509.bundle_for("example.org"),
        lambda: bundles.bundles,
        lambda: bundles.bundle_for("example.org"),
        lambda: jwts.bundles,
        lambda: jwts.bundle_for("example.org"),
        lambda: jwts.validate(token, "svc"),
        lambda: jwts.fetch_svid("svc"),  # even a cached one is not served
    ):
        with pytest.raises(SourceClosedError, match="closed"):
            getter()


async def test_closed_async_sources_raise_from_every_getter(dev_agent: DevAgent) -> None:
    x509 = await AsyncX509Source(dev_agent.address).start()
    bundles = await AsyncX509BundleSource(dev_agent.address).start()
    jwts = await AsyncJWTSource(dev_agent.address).start()
    token = (await jwts.fetch_svid("svc")).token
    waiter = asyncio.create_task(x509.wait_for(lambda c: False))  # blocked in wait_for when closed
    await asyncio.sleep(0)
    for source in (x509, bundles, jwts):
        await source.close()
        await source.close()
        assert source.status is SourceStatus.CLOSED
        with pytest.raises(SourceClosedError):
            await source.wait_for()
        with pytest.raises(SourceClosedError):
            source.subscribe(lambda _: None)
        with pytest.raises(SourceClosedError):
            await source.start()
    with pytest.raises(SourceClosedError):
        await asyncio.wait_for(waiter, 5)
    for getter in (
        lambda: x509.context,
        lambda: x509.svid(),
        lambda: bundles.bundles,
        lambda: bundles.bundle_for("example.org"),
        lambda: jwts.bundles,
        lambda: jwts.validate(token, "svc"),
    ):
        with pytest.raises(SourceClosedError):
            getter()
    with pytest.raises(SourceClosedError):
        await jwts.fetch_svid("svc")


# -- client= is honoured: streamed over, never owned or closed -------------------------------------


def test_sync_source_streams_over_the_client_it_is_given(
    dev_agent: DevAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET", raising=False)  # no address to open a client of its own
    backoff = counting()
    dev_agent.inject_errors(X509, [(grpc.StatusCode.UNAVAILABLE, "busy")] * 3)
    with WorkloadClient(dev_agent.address, backoff=backoff) as client:
        source = X509Source(client=client, timeout=10)
        assert backoff.asked == [1, 2, 3]  # type: ignore[attr-defined]  # the client's own policy retried
        assert source.state.reconnects == 3
        dev_agent.rotate()
        source.wait_for(lambda c: c.default_svid.leaf.serial_number == dev_agent.svids[0].serial_number, 10)
        jwts = JWTSource(client=client, timeout=10)
        assert jwts.fetch_svid("svc").spiffe_id == source.svid().spiffe_id
        source.close()
        jwts.close()
        dev_agent.wait_until(lambda: dev_agent.open_streams() == 0, 10, "the sources' streams to end")
        assert not client.closed
        assert client.fetch_x509_context().default_svid.leaf.serial_number == dev_agent.svids[0].serial_number


async def test_async_source_streams_over_the_client_it_is_given(
    dev_agent: DevAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET", raising=False)
    backoff = counting()
    dev_agent.inject_errors(X509, [(grpc.StatusCode.UNAVAILABLE, "busy")] * 2)
    async with AsyncWorkloadClient(dev_agent.address, backoff=backoff) as client:
        async with AsyncX509Source(client=client, timeout=10) as source:
            assert backoff.asked == [1, 2]  # type: ignore[attr-defined]
            async with AsyncJWTSource(client=client, timeout=10) as jwts:
                assert (await jwts.fetch_svid("svc")).spiffe_id == source.svid().spiffe_id
        await asyncio.to_thread(
            dev_agent.wait_until, lambda: dev_agent.open_streams() == 0, 10, "streams end"
        )
        ctx = await client.fetch_x509_context(timeout=10)  # still open: the sources did not close it
        assert str(ctx.default_svid.spiffe_id) == source_id(dev_agent)


def source_id(dev_agent: DevAgent) -> str:
    return dev_agent.identities[0].spiffe_id


# -- the JWT and X.509 bundle sources ------------------------------------------------------------------


async def test_async_jwt_source(dev_agent: DevAgent) -> None:
    async with AsyncJWTSource(dev_agent.address) as source:
        assert source.status is SourceStatus.READY
        svid = await source.fetch_svid("svc", "other")
        assert await source.fetch_svid("svc", "other") is svid  # cached until half-life
        assert dev_agent.calls("FetchJWTSVID") == 1
        assert source.validate(svid.token, "other").spiffe_id == svid.spiffe_id
        assert source.bundle_for("example.org") is not None
        seen: list[bytes] = []
        delivered = asyncio.Event()

        def on_update(bundles: JwtBundleSet) -> None:
            seen.append(bundles.digest)
            delivered.set()

        source.subscribe(on_update)
        old = source.bundles.digest
        kid = await asyncio.to_thread(dev_agent.rotate_jwt_bundle, keep_previous=False)
        rotated = await asyncio.wait_for(source.wait_for(lambda b: b.digest != old), 10)
        assert kid in rotated.bundles[next(iter(rotated.bundles))].keys
        await asyncio.wait_for(delivered.wait(), 10)
        assert seen == [rotated.digest]
        with pytest.raises(JwtSvidError):
            source.validate(svid.token, "svc")  # signed by the key the agent dropped


async def test_async_x509_bundle_source(dev_agent: DevAgent) -> None:
    async with AsyncX509BundleSource(dev_agent.address) as source:
        own = source.bundle_for("example.org")
        assert own is not None and own.der == dev_agent.ca.bundle_der()
        assert source.bundle_for("other.org") is None
        await asyncio.to_thread(dev_agent.add_federated_trust_domain, "other.org")
        bundles = await asyncio.wait_for(source.wait_for(lambda b: b.bundle_for("other.org") is not None), 10)
        assert set(map(str, bundles.bundles)) == {"example.org", "other.org"}
        assert dev_agent.calls(X509) == 0  # trust without an SVID: only FetchX509Bundles was called


def test_x509_bundle_source_sync(dev_agent: DevAgent) -> None:
    got = threading.Event()
    with X509BundleSource(dev_agent.address, timeout=10) as source:
        source.subscribe(lambda b: got.set() if b.bundle_for("other.org") is not None else None)
        dev_agent.add_federated_trust_domain("other.org")
        assert got.wait(10)
        assert source.bundle_for("other.org") is not None


def test_sources_meet_the_public_protocols(dev_agent: DevAgent) -> None:
    def trust_of(source: X509SourceLike | X509BundleSetSourceLike) -> object:
        return source.bundle_for("example.org")

    with X509Source(dev_agent.address) as x509, X509BundleSource(dev_agent.address) as bundles:
        assert trust_of(x509) == trust_of(bundles)


def test_a_source_that_cannot_start_leaves_no_loop_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET", raising=False)

    def loops() -> int:
        return sum(t.name.startswith("spiffe-bridge-") for t in threading.enumerate())

    before = loops()
    for cls in (X509Source, X509BundleSource, JWTSource):
        with pytest.raises(AddressError):
            cls(timeout=1)
    assert loops() == before
