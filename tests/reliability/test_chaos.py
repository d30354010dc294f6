"""Chaos: a seeded random schedule of every agent fault, against a library source and the sidecar.

After each step the test waits (on events) until both hold the agent's current material, and
checks throughout that the sidecar's files are never missing or torn, that no invalid context
is handed out, and that nothing stops for good. CI runs a bounded number of steps; ``--soak``
runs ``SPIFFE_BRIDGE_SOAK_SECONDS`` (default 600) of them. A failure prints the seed; rerun it
with ``SPIFFE_BRIDGE_CHAOS_SEED``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from reliability_support import FAST, context_problems, scale
from sidecar_support import PEM_FILES, FileWatcher, Published, read_or_none, running, sidecar_config

from spiffe_bridge import JWTSource, SourceStatus, X509Source
from spiffe_bridge.client import decode_jwt_bundles, decode_x509_context
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.sidecar.runner import Daemon
from spiffe_bridge.x509context import X509Context

X509 = "FetchX509SVID"
JWT = "FetchJWTBundles"


class Chaos:
    def __init__(
        self, agent: DevAgent, source: X509Source, jwt_source: JWTSource, daemon: Daemon, published: Published
    ) -> None:
        self.agent, self.source, self.jwt_source = agent, source, jwt_source
        self.daemon, self.published = daemon, published
        self.handed_out: list[str] = []
        self.steps: dict[str, int] = {}
        self.lock = threading.Lock()
        source.subscribe(self._check)

    def _check(self, ctx: X509Context) -> None:
        problems = context_problems(ctx)
        with self.lock:
            self.handed_out += problems

    # -- waiting for the agent's current material everywhere ----------------------------------

    def settle(self) -> None:
        agent = self.agent
        want = decode_x509_context(agent.x509_svid_response()).digest
        self.source.wait_for(lambda c: c.digest == want and self.source.status is SourceStatus.READY, 20)
        jwt_want = decode_jwt_bundles(agent.jwt_bundles_response()).digest
        self.jwt_source.wait_for(lambda b: b.digest == jwt_want, 20)
        sidecar = self.daemon.x509_source
        assert sidecar is not None
        sidecar.state.wait(lambda c: c.digest == want and sidecar.status is SourceStatus.READY, 30)
        serial = agent.svids[0].serial_number
        # the daemon writes after its source took the update: wait for that write (if one was due)
        self.published.wait(
            lambda: _serial(read_or_none(self.daemon_dir / "svid.pem")) == serial, "the sidecar's files", 30
        )

    daemon_dir: Path

    # -- the faults ------------------------------------------------------------------------------

    def rotate(self) -> None:
        self.agent.rotate()

    def restart(self) -> None:
        self.agent.restart()

    def deny_then_allow(self) -> None:
        self.agent.deny()
        self.source.wait_for(lambda c: self.source.status is SourceStatus.IDENTITY_LOST, 20)
        self.agent.allow()

    def unavailable_burst(self) -> None:
        self.agent.inject_errors(X509, [(grpc.StatusCode.UNAVAILABLE, "rate limited")] * 3)
        self.agent.restart()

    def close_after_each(self) -> None:
        opened = self.agent.streams_opened(X509)
        self.agent.close_after_each_message(X509)
        self.agent.rotate()  # the open streams end after this message; every new one after its first
        self.agent.wait_for_streams_opened(X509, opened + 4, timeout=20)
        self.agent.close_after_each_message(X509, False)
        self.agent.rotate()  # a fresh stream may already be open: make sure it gets news

    def hostile_message(self) -> None:
        bad = self.agent.x509_svid_response()
        bad.svids[0].x509_svid_key = bad.svids[-1].x509_svid_key if len(bad.svids) > 1 else b"\x30\x00"
        bad.svids[0].x509_svid = bad.svids[0].x509_svid[:-1]
        rejected = self.source.state.rejected
        if self.agent.push_raw(X509, bad):
            self.agent.rotate()
            self.source.wait_for(lambda c: self.source.state.rejected > rejected, 20)

    def garbage_bytes(self) -> None:
        self.agent.push_raw(X509, b"\xff\x00 not protobuf")
        self.agent.rotate()

    def hang_then_answer(self) -> None:
        self.agent.hang(X509)
        self.agent.rotate()  # queued, not sent
        self.agent.hang(X509, False)

    def rotate_x509_authority(self) -> None:
        self.agent.rotate_x509_bundle(keep_previous=True)

    def drop_old_authorities(self) -> None:
        self.agent.drop_previous_x509_authorities()

    def rotate_jwt_authority(self) -> None:
        self.agent.rotate_jwt_bundle(keep_previous=False)

    def run(self, rng: random.Random, steps: int | None, seconds: float | None) -> None:
        faults: list[Callable[[], None]] = [
            self.rotate,
            self.restart,
            self.deny_then_allow,
            self.unavailable_burst,
            self.close_after_each,
            self.hostile_message,
            self.garbage_bytes,
            self.hang_then_answer,
            self.rotate_x509_authority,
            self.drop_old_authorities,
            self.rotate_jwt_authority,
        ]
        deadline = None if seconds is None else time.monotonic() + seconds
        n = 0
        while (steps is None or n < steps) and (deadline is None or time.monotonic() < deadline):
            fault = rng.choice(faults)
            self.steps[fault.__name__] = self.steps.get(fault.__name__, 0) + 1
            fault()
            self.settle()
            n += 1


def _serial(pem: bytes | None) -> int | None:
    try:
        return x509.load_pem_x509_certificates(pem)[0].serial_number if pem else None
    except ValueError:
        return None


def _chaos(agent: DevAgent, tmp_path: Path, steps: int | None, seconds: float | None) -> None:
    seed = int(os.environ.get("SPIFFE_BRIDGE_CHAOS_SEED", random.randrange(2**32)))
    print(f"\nchaos seed {seed} (rerun with SPIFFE_BRIDGE_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    certs = tmp_path / "certs"
    config = sidecar_config(agent, PEM_FILES.format(dir=certs) + 'layout = "symlink"\n')
    with (
        running(config) as (daemon, published),
        X509Source(agent.address, backoff=FAST) as source,
        JWTSource(agent.address, backoff=FAST) as jwt_source,
    ):
        chaos = Chaos(agent, source, jwt_source, daemon, published)
        chaos.daemon_dir = certs
        chaos.settle()
        with FileWatcher(certs, "symlink") as watcher:
            started = time.monotonic()
            chaos.run(rng, steps, seconds)
            watcher.wait_reads(1)
        elapsed = time.monotonic() - started
        print(
            f"chaos: {sum(chaos.steps.values())} steps in {elapsed:.1f}s {chaos.steps}; "
            f"source reconnects {source.state.reconnects}, rejected {source.state.rejected}; "
            f"sidecar files read {watcher.reads} times, {len(watcher.sets)} distinct sets"
        )
        assert watcher.problems == [], f"seed {seed}"
        assert chaos.handed_out == [], f"seed {seed}"
        assert daemon.status.ready() and daemon.status.live(), f"seed {seed}"
        assert source.status is SourceStatus.READY


@pytest.mark.dev_agent(
    intermediate=True, identities=["spiffe://example.org/web#web", "spiffe://example.org/db"]
)
def test_chaos(dev_agent: DevAgent, tmp_path: Path) -> None:
    _chaos(dev_agent, tmp_path, steps=scale(50, 1000), seconds=None)


@pytest.mark.soak
@pytest.mark.dev_agent(
    intermediate=True, identities=["spiffe://example.org/web#web", "spiffe://example.org/db"]
)
def test_chaos_soak(dev_agent: DevAgent, tmp_path: Path) -> None:
    _chaos(
        dev_agent, tmp_path, steps=None, seconds=float(os.environ.get("SPIFFE_BRIDGE_SOAK_SECONDS", "600"))
    )
