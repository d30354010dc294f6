"""``spiffe-bridge dev-agent`` in a subprocess: startup lines, SIGUSR1 rotation, clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from devagent_helpers import Collector
from spiffe import TrustDomain, WorkloadApiClient
from spiffe.workloadapi.errors import FetchX509SvidError
from spiffe.workloadapi.x509_context import X509Context

from spiffe_bridge.devagent.identity import Identity
from spiffe_bridge.duration import parse_duration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def start_cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("SPIFFE_ENDPOINT_SOCKET", None)
    cmd = [sys.executable, "-m", "spiffe_bridge", "dev-agent", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def read_banner(proc: subprocess.Popen[str]) -> str:
    """Return the advertised address; the lines appear once the socket is bound."""
    assert proc.stdout is not None
    first = proc.stdout.readline()
    second = proc.stdout.readline().strip()
    assert "unix://" in first, first + (proc.stderr.read() if proc.stderr else "")
    assert second.startswith("SPIFFE_ENDPOINT_SOCKET=unix:///")
    return second.split("=", 1)[1]


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err


def test_cli_serves_rotates_on_sigusr1_and_exits_cleanly(tmp_short: str) -> None:
    sock = os.path.join(tmp_short, "api.sock")
    proc = start_cli(
        "--socket", sock, "--trust-domain", "demo.test",
        "--spiffe-id", "spiffe://demo.test/web#web", "--spiffe-id", "spiffe://demo.test/db",
        "--intermediate", "--federate-with", "partner.test", "--ttl", "10m", "--log-level", "INFO",
    )  # fmt: skip
    try:
        address = read_banner(proc)
        assert address == f"unix://{sock}"
        serials: Collector[int] = Collector()
        errors: Collector[Exception] = Collector()
        with WorkloadApiClient(address) as client:
            ctx = client.fetch_x509_context()
            assert [str(s.spiffe_id) for s in ctx.x509_svids] == [
                "spiffe://demo.test/web",
                "spiffe://demo.test/db",
            ]
            assert len(ctx.default_svid.cert_chain) == 2  # --intermediate
            assert ctx.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain("partner.test"))
            lifetime = ctx.default_svid.leaf.not_valid_after_utc - ctx.default_svid.leaf.not_valid_before_utc
            assert 590 <= lifetime.total_seconds() <= 630  # 10m plus the backdating

            handle = client.stream_x509_contexts(
                lambda c: serials.add(c.default_svid.leaf.serial_number), errors.add
            )
            try:
                first = serials.wait_count(1)[0]
                proc.send_signal(signal.SIGUSR1)
                rotated = serials.wait_count(2)[1]
            finally:
                handle.cancel()
        assert rotated != first and errors.items == []
        code, err = stop(proc)
        assert code == 0, err
        assert "rotated 2 X509-SVIDs" in err and "pushed FetchX509SVID" in err
        assert not os.path.exists(sock)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_cli_permission_denied_window_and_sigint(tmp_short: str) -> None:
    proc = start_cli(
        "--socket", "unix://" + os.path.join(tmp_short, "a.sock"), "--permission-denied-for", "1h"
    )
    try:
        address = read_banner(proc)
        with WorkloadApiClient(address) as client, pytest.raises(FetchX509SvidError, match="PERMISSION"):
            client.fetch_x509_context()
        code, err = stop(proc, signal.SIGINT)
        assert code == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize(
    "args",
    [
        ["--socket", "/tmp/x.sock", "--ttl", "soon"],
        ["--socket", "/tmp/x.sock", "--spiffe-id", "spiffe://other.org/w"],
    ],
    ids=["bad-duration", "foreign-id"],
)
def test_cli_rejects_bad_arguments(args: list[str]) -> None:
    proc = start_cli(*args)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "dev-agent" in err


def test_parse_duration() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("5m") == 300
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    assert parse_duration("2") == 2
    for bad in ("", "soon", "-1s", "5x", "1h-"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_identity_spec() -> None:
    ident = Identity.parse("spiffe://example.org/web#frontend", ("web.example.org",))
    assert (ident.spiffe_id, ident.hint, ident.dns_names) == (
        "spiffe://example.org/web",
        "frontend",
        ("web.example.org",),
    )
    assert ident.trust_domain == "example.org"
    for bad in (
        "spiffe://example.org",
        "spiffe://Example.org/w",
        "https://example.org/w",
        "spiffe://e.org/a/../b",
    ):
        with pytest.raises(ValueError):
            Identity.parse(bad)


def test_cli_sigusr2_rotates_the_root_keeping_the_old_one(tmp_short: str) -> None:
    proc = start_cli("--socket", os.path.join(tmp_short, "a.sock"))
    try:
        address = read_banner(proc)
        root_counts: Collector[int] = Collector()
        errors: Collector[Exception] = Collector()
        own = TrustDomain("example.org")
        with WorkloadApiClient(address) as client:

            def on_update(ctx: X509Context) -> None:
                bundle = ctx.x509_bundle_set.get_bundle_for_trust_domain(own)
                root_counts.add(len(bundle.x509_authorities) if bundle else 0)

            handle = client.stream_x509_contexts(on_update, errors.add)
            try:
                assert root_counts.wait_count(1) == [1]
                proc.send_signal(signal.SIGUSR2)
                root_counts.wait_for(lambda counts: 2 in counts)
            finally:
                handle.cancel()
        assert errors.items == []
        code, err = stop(proc)
        assert code == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
