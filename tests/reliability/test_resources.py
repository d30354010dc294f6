"""Resource bounds: memory stays flat over many rotations, file descriptors do not leak on reconnects.

The figures are printed (run with ``-s`` to see them) and reported in docs/reliability.md.
"""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc

from _support.pki import svid_message
from reliability_support import FAST, fd_count, rss_bytes, scale

from spiffe_bridge import JWTSource, SourceStatus, WorkloadClient, X509Source
from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.client import X509_CONTEXTS, decode_jwt_bundles
from spiffe_bridge.devagent.ca import TrustDomainCA
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.jwtsvid import validate_jwt_svid
from spiffe_bridge.sources.state import SourceState
from spiffe_bridge.x509context import X509Context

KIB = 1024
MIB = 1024 * KIB


def _messages(count: int) -> list[bytes]:
    """Serialized X509SVIDResponses, pre-generated (one SVID each, so 10,000 decodes stay quick)."""
    ca = TrustDomainCA("example.org")
    return [
        pb.X509SVIDResponse(svids=[svid_message(ca, "spiffe://example.org/web", "web")]).SerializeToString()
        for _ in range(count)
    ]


def test_memory_flat_over_many_rotations() -> None:
    """10,000 rotations through the client's decode path (protobuf parse + full validation) and
    SourceState.offer with a subscriber.

    RSS is sampled untraced (after the model's bounded caches filled) and traced; Python
    allocations are traced over the second half only (tracing doubles the cost) and compared
    once the caches have turned over completely since tracing began.
    """
    rotations = scale(10_000, 100_000)
    # More distinct SVIDs than the model's bounded parse/verify caches hold (1024), so they
    # fill up early and must stay at their bound afterwards.
    raws = _messages(1500)
    warm, traced_from = len(raws) + 500, rotations // 2
    measure_at = traced_from + 2 * len(raws)
    state: SourceState[X509Context] = SourceState("memory test")
    delivered = [0]
    lock = threading.Lock()

    def subscriber(ctx: X509Context) -> None:
        with lock:
            delivered[0] += 1

    state.subscribe(subscriber)
    started = time.monotonic()
    rss: dict[int, int] = {}
    traced: dict[int, int] = {}
    try:
        for i in range(1, rotations + 1):
            message = pb.X509SVIDResponse.FromString(raws[i % len(raws)])
            assert state.offer(X509_CONTEXTS.decode(message))
            if i in (warm, traced_from, measure_at, rotations):
                gc.collect()
                rss[i] = rss_bytes()
                if tracemalloc.is_tracing():
                    traced[i] = tracemalloc.get_traced_memory()[0]
            if i == traced_from:
                tracemalloc.start()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    print(
        f"\nmemory over {rotations} rotations ({elapsed:.1f}s): RSS {rss[warm] / MIB:.1f} MiB at {warm}, "
        f"{rss[traced_from] / MIB:.1f} at {traced_from} (untraced); {rss[measure_at] / MIB:.1f} at "
        f"{measure_at}, {rss[rotations] / MIB:.1f} at {rotations} (traced); traced live "
        f"{traced[measure_at] / KIB:.0f} KiB at {measure_at} -> {traced[rotations] / KIB:.0f} KiB"
    )
    assert state.updates == rotations
    assert traced[rotations] - traced[measure_at] < 128 * KIB, "Python allocations grow with rotations"
    assert rss[traced_from] - rss[warm] < 8 * MIB, "RSS grows with rotations"
    assert rss[rotations] - rss[measure_at] < 8 * MIB, "RSS grows with rotations"


def test_memory_flat_over_many_distinct_jwt_validations() -> None:
    """The per-bundle cache of verified signatures is bounded."""
    count = scale(10_000, 50_000)
    ca = TrustDomainCA("example.org")
    bundles = decode_jwt_bundles(pb.JWTBundlesResponse(bundles={ca.id: ca.jwks_json()}))
    now = int(time.time())
    gc.collect()
    tracemalloc.start()
    try:
        half = 0
        for i in range(count):
            claims = {"sub": "spiffe://example.org/web", "aud": "svc", "exp": now + 600, "jti": str(i)}
            validate_jwt_svid(ca.sign_jwt(claims), "svc", bundles)
            if i + 1 == count // 2:
                gc.collect()
                half, _ = tracemalloc.get_traced_memory()
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\nJWT validation of {count} distinct tokens: traced {half / KIB:.0f} -> {end / KIB:.0f} KiB")
    assert end - half < 256 * KIB


def test_no_fd_leak_across_reconnects(dev_agent: DevAgent) -> None:
    restarts = scale(50, 500)
    gc.collect()
    baseline = fd_count()
    with (
        WorkloadClient(dev_agent.address, backoff=FAST) as client,
        X509Source(dev_agent.address, backoff=FAST) as source,
        JWTSource(dev_agent.address, backoff=FAST) as jwt_source,
    ):
        client.fetch_x509_context()
        before = fd_count()
        for i in range(restarts):
            opened = dev_agent.streams_opened("FetchX509SVID")
            dev_agent.restart()
            dev_agent.wait_for_streams_opened("FetchX509SVID", opened + 1)
            source.wait_for(
                lambda c, n=i + 1: source.state.reconnects >= n and source.status is SourceStatus.READY
            )
            jwt_source.wait_for(lambda b: jwt_source.status is SourceStatus.READY)
            client.fetch_x509_context()  # the one-shot client reconnects too
        after = fd_count()
    gc.collect()
    closed = fd_count()
    print(
        f"\nfds: {baseline} before any client, {before} connected, {after} after {restarts} agent "
        f"restarts, {closed} after closing"
    )
    assert after <= before + 2, f"fds grew from {before} to {after} over {restarts} reconnects"
    assert closed <= baseline + 2


def test_no_fd_leak_across_source_lifecycles(dev_agent: DevAgent) -> None:
    """Opening and closing sources and clients (each with its own channel and loop) returns every fd."""
    counts = []
    for _ in range(scale(20, 200)):
        with (
            X509Source(dev_agent.address, backoff=FAST) as source,
            JWTSource(dev_agent.address, backoff=FAST) as jwt_source,
            WorkloadClient(dev_agent.address) as client,
        ):
            client.fetch_x509_context()
            assert source.status is SourceStatus.READY and jwt_source.status is SourceStatus.READY
        gc.collect()
        counts.append(fd_count())
    print(f"\nfds after each of {len(counts)} open/close cycles: {sorted(set(counts))}")
    assert max(counts) <= counts[0] + 1, counts
