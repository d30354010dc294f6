"""Secrets: key files 0600 whatever the umask (re-applied on every write); no private key or
JWT-SVID in logs or exception messages at any level; the health endpoint binds loopback."""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from reliability_support import FAST
from sidecar_support import read_or_none, running, sidecar_config

from spiffe_bridge import JWTSource, WorkloadClient, X509Source
from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.errors import SpiffeBridgeError
from spiffe_bridge.fileset import FileSetWriter, FileSpec
from spiffe_bridge.formats import X509_FORMATS, X509Options, render_x509
from spiffe_bridge.jwtsvid import validate_jwt_svid
from spiffe_bridge.x509context import X509Context

OPTIONS = X509Options(
    linkerd_workload_api_address="unix:///run/agent.sock",
    linkerd_server_name="web.example.org",
    pkcs12_password="changeit",
)


def key_markers(key_der: bytes) -> list[bytes]:
    """Ways a private key could leak into text: PEM body lines, base64 (std/url), hex."""
    b64 = base64.b64encode(key_der)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return [
        b64,
        base64.urlsafe_b64encode(key_der).rstrip(b"="),
        key_der.hex().encode(),
        *[line for line in lines if len(line) >= 32],
        repr(key_der)[2:60].encode(),
    ]


def token_markers(token: str) -> list[bytes]:
    _head, body, sig = token.split(".")
    return [token.encode(), f"{body}.{sig}".encode(), sig.encode()]


#: Formats that write trust material only (Linkerd's anchors, gRPC's bundle map).
KEYLESS_FORMATS = ("linkerd", "bundle-map")


def key_files(specs: list[FileSpec], ctx: X509Context) -> set[str]:
    """Files whose content carries the private key (directly, as PEM/base64, or in a keystore)."""
    markers = [ctx.default_svid.key_der, *key_markers(ctx.default_svid.key_der)]
    names = {s.name for s in specs if any(m in s.data for m in markers)}
    names |= {s.name for s in specs if s.name == OPTIONS.pkcs12_keystore_file_name}
    return names


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=["umask000", "umask022", "umask077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.mark.parametrize("layout", ["symlink", "flat"])
@pytest.mark.parametrize("fmt", X509_FORMATS)
def test_key_files_are_0600_whatever_the_umask(
    dev_agent: DevAgent, tmp_path: Path, fmt: str, layout: str, umask: int
) -> None:
    with WorkloadClient(dev_agent.address) as client:
        ctx = client.fetch_x509_context()
    specs = render_x509(fmt, ctx, OPTIONS)
    secret = key_files(specs, ctx)
    if fmt in KEYLESS_FORMATS:
        assert not secret, f"{fmt}: carries only public material"
    else:
        assert secret, f"{fmt}: expected a file carrying the key"
    writer = FileSetWriter(tmp_path / "out", layout=layout)  # type: ignore[arg-type]
    writer.write(specs)
    for spec in specs:
        mode = stat.S_IMODE(os.stat(tmp_path / "out" / spec.name).st_mode)
        assert mode == spec.mode, f"{spec.name}: {mode:#o} under umask {umask:#o}"
        if spec.name in secret:
            assert mode == 0o600, f"{spec.name} carries the key but is {mode:#o}"
    # Someone loosens the key file; the next write (same material) re-applies 0600.
    for name in secret:
        os.chmod(tmp_path / "out" / name, 0o644)
    assert writer.write(specs).changed == bool(secret)
    for name in secret:
        assert stat.S_IMODE(os.stat(tmp_path / "out" / name).st_mode) == 0o600


# -- no key material or token in logs or exception messages ---------------------------------------


class Leaks:
    """Collects every secret seen during the session and every text that must not contain one."""

    def __init__(self) -> None:
        self.markers: dict[bytes, str] = {}
        self.texts: list[str] = []

    def key(self, key_der: bytes) -> None:
        for m in key_markers(key_der):
            self.markers[m] = "private key"

    def token(self, token: str) -> None:
        for m in token_markers(token):
            self.markers[m] = "JWT-SVID"

    def error(self, exc: BaseException) -> None:
        self.texts += [str(exc), repr(exc), *[str(a) for a in exc.args]]

    @contextlib.contextmanager
    def expect(self, *types: type[BaseException]) -> Iterator[None]:
        try:
            yield
        except types as exc:
            self.error(exc)
        else:
            raise AssertionError(f"expected one of {types}")

    def found(self, text: str) -> list[str]:
        data = text.encode()
        return [f"{what} ({m[:16]!r}...)" for m, what in self.markers.items() if m in data]


@pytest.mark.dev_agent(identities=["spiffe://example.org/web#web", "spiffe://example.org/db#db"])
def test_no_secret_in_logs_or_errors(
    dev_agent: DevAgent, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # restored after the test, like the per-logger ones below
    for name in ("spiffe_bridge", "grpc"):
        caplog.set_level(logging.DEBUG, logger=name)
    leaks = Leaks()
    for m in dev_agent.svids:
        leaks.key(m.key_der())

    with WorkloadClient(dev_agent.address, backoff=FAST) as client:
        # fetch, watch, rotate
        ctx = client.fetch_x509_context()
        leaks.texts += [repr(ctx), repr(ctx.default_svid), str(ctx.default_svid)]
        client.fetch_x509_bundles()
        bundles = client.fetch_jwt_bundles()
        with (
            X509Source(dev_agent.address, backoff=FAST) as source,
            JWTSource(dev_agent.address, backoff=FAST) as jwt_source,
        ):
            for m in dev_agent.rotate():
                leaks.key(m.key_der())
            source.wait_for(lambda c: c.default_svid.leaf.serial_number == dev_agent.svids[0].serial_number)
            # rejections: a key that does not match, a key that does not parse, a truncated chain
            good = dev_agent.x509_svid_response()
            for field, value in (
                ("x509_svid_key", good.svids[1].x509_svid_key),
                ("x509_svid_key", good.svids[0].x509_svid_key[:-7]),
                ("x509_svid", good.svids[0].x509_svid[:200]),
            ):
                bad = pb.X509SVIDResponse()
                bad.CopyFrom(good)
                setattr(bad.svids[0], field, value)
                rejected = source.state.rejected
                dev_agent.push_raw("FetchX509SVID", bad)
                dev_agent.rotate()
                for m in dev_agent.svids:
                    leaks.key(m.key_der())
                source.wait_for(lambda c, r=rejected: source.state.rejected > r)
                assert source.last_error is not None
                leaks.error(source.last_error)
            # JWT: fetch, validate (locally and by the agent), and failures of each kind
            svid = client.fetch_jwt_svid("svc")
            leaks.token(svid.token)
            leaks.texts += [repr(svid), str(svid)]
            fetched = jwt_source.fetch_svid("db")
            leaks.token(fetched.token)
            assert client.validate_jwt_svid(svid.token, "svc").spiffe_id == svid.spiffe_id
            jwt_source.validate(svid.token, "svc")
            head, body, sig = svid.token.split(".")
            forged = f"{head}.{body}.{sig[:-4]}AAAA"
            leaks.token(forged)
            with leaks.expect(SpiffeBridgeError):
                validate_jwt_svid(svid.token, "other", bundles)
            with leaks.expect(SpiffeBridgeError):
                jwt_source.validate(forged, "svc")
            with leaks.expect(SpiffeBridgeError, grpc.RpcError):
                client.validate_jwt_svid(forged, "svc")
            with leaks.expect(SpiffeBridgeError):
                jwt_source.validate(svid.token + "x", "svc")
            expired = dev_agent.ca.sign_jwt({"sub": "spiffe://example.org/web", "aud": "svc", "exp": 1})
            leaks.token(expired)
            with leaks.expect(SpiffeBridgeError):
                jwt_source.validate(expired, "svc")
            with leaks.expect(SpiffeBridgeError, grpc.RpcError):
                client.validate_jwt_svid(expired, "svc")
            dev_agent.respond_next_with(
                "FetchJWTSVID",
                pb.JWTSVIDResponse(svids=[pb.JWTSVID(spiffe_id="spiffe://example.org/db", svid=svid.token)]),
            )
            with leaks.expect(SpiffeBridgeError):
                client.fetch_jwt_svid("svc")

    # the files: every format written, then the sidecar writing and rotating at DEBUG
    for fmt in X509_FORMATS:
        specs = render_x509(fmt, ctx, OPTIONS)
        leaks.texts += [repr(s) for s in specs]
        FileSetWriter(tmp_path / fmt).write(specs)
    certs = tmp_path / "sidecar"
    text = f"""
        cert_dir = "{certs}"
        svid_file_name = "svid.pem"
        svid_key_file_name = "svid_key.pem"
        svid_bundle_file_name = "svid_bundle.pem"
        jwt_svids = [{{jwt_audience = "db", jwt_svid_file_name = "db.token"}}]
        jwt_bundle_file_name = "jwt_bundle.json"
    """
    with running(sidecar_config(dev_agent, text)) as (_daemon, published):
        published.wait(lambda: read_or_none(certs / "db.token") is not None, "the JWT-SVID file")
        leaks.token((certs / "db.token").read_text())
        for _ in range(2):
            serial = dev_agent.svids[0].serial_number
            published.wait(lambda s=serial: _serial(read_or_none(certs / "svid.pem")) == s, "the SVID files")
            for m in dev_agent.rotate():
                leaks.key(m.key_der())

    logged = caplog.text + "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert len(caplog.records) > 20, "the session should have logged (DEBUG capture works)"
    assert leaks.found(logged) == [], "secret material in the logs"
    problems = [(t[:80], leaks.found(t)) for t in leaks.texts if leaks.found(t)]
    assert problems == [], "secret material in exception messages or reprs"


def _serial(pem: bytes | None) -> int | None:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(pem)[0].serial_number if pem else None
    except ValueError:
        return None


def test_health_endpoint_binds_loopback_by_default(dev_agent: DevAgent, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = f"""
        cert_dir = "{tmp_path / "certs"}"
        svid_file_name = "svid.pem"
        svid_key_file_name = "svid_key.pem"
        svid_bundle_file_name = "svid_bundle.pem"
        health_checks {{
          listener_enabled = true
          bind_port = {port}
        }}
    """
    config = sidecar_config(dev_agent, text)
    assert config.health.bind_address == "127.0.0.1"
    with running(config) as (daemon, published):
        published.wait(lambda: daemon.health is not None, "the health server")
        assert daemon.health is not None
        host, bound = daemon.health.address
        assert (host, bound) == ("127.0.0.1", port)
        # Not reachable on another local address of this host (when it has one).
        other = _non_loopback_address()
        if other is not None:
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((other, port)) != 0


def _non_loopback_address() -> str | None:
    """A local, non-loopback IPv4 address of this host (from the kernel's routing trie), if any."""
    try:
        with open("/proc/net/fib_trie") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for prev, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line:
            address = prev.strip().split()[-1]
            if not address.startswith("127."):
                return address
    return None
