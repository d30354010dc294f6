"""Concurrency: readers never see a torn credential set; subscribers cannot stall each other."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support.pki import svid_message
from reliability_support import FAST, context_problems, pem_set_problems, pem_specs, scale

from spiffe_bridge import AsyncX509Source, X509Source
from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.client import decode_x509_context
from spiffe_bridge.devagent.ca import TrustDomainCA
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.fileset import FileSetWriter, FileSpec, read_current
from spiffe_bridge.x509context import X509Context

NAMES = ["svid.pem", "svid_key.pem", "svid_bundle.pem"]


@functools.cache
def _rotating_sets(count: int) -> tuple[tuple[FileSpec, ...], ...]:
    """``count`` distinct PEM sets (intermediate CA, so chain<->bundle matters), cycled by the writer.

    Every few sets also rotate the root, so a bundle from one set does not verify another's chain.
    """
    sets = []
    ca = TrustDomainCA("example.org", intermediate=True)
    for i in range(count):
        if i and i % 4 == 0:
            ca = TrustDomainCA("example.org", intermediate=True)
        msg = pb.X509SVIDResponse(svids=[svid_message(ca, "spiffe://example.org/web")])
        sets.append(tuple(pem_specs(decode_x509_context(msg))))
    return tuple(sets)


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """tmpfs when available: fsync is free there, and rename atomicity is the same."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else str(tmp_path)
    path = Path(tempfile.mkdtemp(prefix="sbr-torn-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class CheckedReads:
    """Counts reads and checks each set once per distinct content (memoised: same bytes, same verdict)."""

    def __init__(self) -> None:
        self.reads = 0
        self.retries = 0
        self.torn: list[str] = []
        self.errors: list[BaseException] = []
        self.distinct: set[bytes] = set()
        self._verdicts: dict[bytes, list[str]] = {}
        self.cond = threading.Condition()

    def check(self, got: dict[str, bytes]) -> None:
        key = hashlib.sha256(b"\0".join(got[n] for n in NAMES)).digest()
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = pem_set_problems(got["svid.pem"], got["svid_key.pem"], got["svid_bundle.pem"])
            self._verdicts[key] = verdict
        with self.cond:
            self.reads += 1
            self.distinct.add(key)
            if verdict:
                self.torn += verdict
            self.cond.notify_all()


def test_readers_never_see_a_torn_set(fast_dir: Path) -> None:
    rotations = scale(1000, 20000)
    reads_wanted = 10 * rotations
    sets = _rotating_sets(16)
    writer = FileSetWriter(fast_dir)
    writer.write(list(sets[0]))
    checked = CheckedReads()
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                try:
                    got = read_current(fast_dir, NAMES, attempts=1)
                except FileNotFoundError:  # its version was pruned mid-read: retry
                    with checked.cond:
                        checked.retries += 1
                    continue
                checked.check(got)
        except BaseException as exc:
            checked.errors.append(exc)

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    started = time.monotonic()
    try:
        for n in range(1, rotations + 1):
            assert writer.write(list(sets[n % len(sets)])).changed
            # pace: about ten reads per rotation, racing the writes
            with checked.cond:
                assert checked.cond.wait_for(lambda n=n: checked.reads >= 10 * n or checked.errors, 30)
        with checked.cond:
            assert checked.cond.wait_for(lambda: checked.reads >= reads_wanted, 30)
    finally:
        done.set()
        for t in threads:
            t.join(10)
    elapsed = time.monotonic() - started
    print(
        f"\ntorn-set check: {checked.reads} reads over {rotations} rotations in {elapsed:.1f}s, "
        f"{checked.retries} retries after pruning, {len(checked.distinct)} distinct sets seen"
    )
    assert checked.errors == []
    assert checked.torn == []
    assert checked.reads >= reads_wanted
    assert len(checked.distinct) == len(sets), "readers should have seen every set"


class Recorder:
    def __init__(self) -> None:
        self.digests: list[bytes] = []
        self.problems: list[str] = []
        self.cond = threading.Condition()

    def __call__(self, ctx: X509Context) -> None:
        problems = context_problems(ctx)
        with self.cond:
            self.digests.append(ctx.digest)
            self.problems += problems
            self.cond.notify_all()

    def wait_last(self, digest: bytes, timeout: float = 10) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: bool(self.digests) and self.digests[-1] == digest, timeout)
        assert ok, "subscriber did not get the latest update"


def test_many_subscribers_each_get_the_latest(dev_agent: DevAgent) -> None:
    recorders = [Recorder() for _ in range(scale(50, 500))]
    rotations = scale(20, 200)
    with X509Source(dev_agent.address, backoff=FAST) as source:
        for r in recorders:
            source.subscribe(r)
        for _ in range(rotations):
            serial = dev_agent.rotate()[0].serial_number
            source.wait_for(lambda c, s=serial: c.default_svid.leaf.serial_number == s)
        final = source.context.digest
        for r in recorders:
            r.wait_last(final)
            assert r.problems == []
            # coalescing may skip intermediate updates, never repeat one
            assert all(a != b for a, b in zip(r.digests, r.digests[1:], strict=False))
        assert source.state.updates == rotations + 1


def test_raising_and_blocking_subscribers_do_not_stall_others(dev_agent: DevAgent) -> None:
    release = threading.Event()
    blocked = Recorder()

    def blocking(ctx: X509Context) -> None:
        blocked(ctx)
        release.wait(30)

    def raising(ctx: X509Context) -> None:
        raise RuntimeError("subscriber bug")

    healthy = Recorder()
    with X509Source(dev_agent.address, backoff=FAST) as source:
        source.subscribe(blocking)
        source.subscribe(raising)
        source.subscribe(healthy)
        for _ in range(10):
            serial = dev_agent.rotate()[0].serial_number
            ctx = source.wait_for(lambda c, s=serial: c.default_svid.leaf.serial_number == s)
            healthy.wait_last(ctx.digest)  # promptly, while the blocking one still blocks
        assert len(blocked.digests) == 1, "the blocked subscriber is not queued up behind itself"
        release.set()
        # once unblocked it gets only the newest update: the backlog is coalesced
        blocked.wait_last(source.context.digest)
        assert len(blocked.digests) == 2
        assert healthy.problems == [] and blocked.problems == []


async def test_async_subscriber_that_blocks_does_not_stall_the_stream(dev_agent: DevAgent) -> None:
    release = asyncio.Event()
    seen: list[bytes] = []
    blocked: list[bytes] = []
    unblocked = asyncio.Event()

    async def blocking(ctx: X509Context) -> None:
        blocked.append(ctx.digest)
        if len(blocked) > 1:
            unblocked.set()
        await release.wait()

    def raising(ctx: X509Context) -> None:
        raise RuntimeError("subscriber bug")

    async with AsyncX509Source(dev_agent.address, backoff=FAST, timeout=10) as source:
        source.subscribe(blocking)
        source.subscribe(raising)
        seen_changed = asyncio.Event()

        def recording(ctx: X509Context) -> None:
            seen.append(ctx.digest)
            seen_changed.set()

        async def seen_last(digest: bytes) -> None:
            while not (seen and seen[-1] == digest):
                seen_changed.clear()
                await seen_changed.wait()

        source.subscribe(recording)
        for _ in range(5):
            serial = (await asyncio.to_thread(dev_agent.rotate))[0].serial_number
            ctx = await asyncio.wait_for(
                source.wait_for(lambda c, s=serial: c.default_svid.leaf.serial_number == s), 10
            )
            await asyncio.wait_for(seen_last(ctx.digest), 10)  # while the blocking one still blocks
        assert len(blocked) == 1
        release.set()
        await asyncio.wait_for(unblocked.wait(), 10)
        assert blocked == [blocked[0], source.context.digest]
