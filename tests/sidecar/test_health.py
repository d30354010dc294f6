"""Health decisions, the HTTP endpoints (spiffe-helper's JSON shape), metrics and log redaction."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import grpc
import pytest
from sidecar_helpers import health, http_get

from spiffe_bridge import logs
from spiffe_bridge.errors import AgentUnavailableError, NoIdentityError
from spiffe_bridge.health import HealthServer
from spiffe_bridge.sidecar.metrics import renderer
from spiffe_bridge.sidecar.status import SidecarStatus
from spiffe_bridge.sources.state import SourceState, SourceStatus


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Digest:
    digest = b"x"


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_status(clock: Clock, policy: str = "keep") -> SidecarStatus:
    return SidecarStatus(
        x509_configured=True,
        jwt_paths=["certs/t.jwt"],
        max_disconnected=60.0,
        policy=policy,
        clock=clock,
        monotonic=clock,
    )


def written(status: SidecarStatus, clock: Clock, ttl: float = 100.0) -> None:
    status.wrote(
        x509=True,
        jwt_paths=["certs/t.jwt"],
        svid_expiry=clock.now + ttl,
        jwt_expiry={"certs/t.jwt": clock.now + ttl * 2},
    )


class TestReadiness:
    def test_ready_only_when_every_file_written_and_unexpired(self, clock: Clock) -> None:
        status = make_status(clock)
        assert not status.ready()
        status.wrote(x509=True, jwt_paths=[], svid_expiry=clock.now + 100, jwt_expiry={})
        assert not status.ready()  # JWT file still unwritten
        written(status, clock)
        assert status.ready()
        assert status.seconds_until_expiry() == pytest.approx(100)
        clock.now += 101
        assert not status.ready()  # the SVID on disk expired

    def test_an_output_not_ready_is_named_and_keeps_the_rest_written(self, clock: Clock) -> None:
        status = make_status(clock)
        status.output_not_ready("/etc/pg/spiffe", "waiting for the workload's identity")
        written(status, clock)
        status.output_ok("/etc/nginx/spiffe")
        assert not status.ready() and status.live()  # not ready is not a liveness problem
        status.output_not_ready("/etc/pg/spiffe", "NoIdentity: no SVIDs for pid 42")
        assert status.snapshot()["outputs"] == {
            "/etc/nginx/spiffe": "written",
            "/etc/pg/spiffe": "not ready: NoIdentity: no SVIDs for pid 42",
        }
        status.output_ok("/etc/pg/spiffe")  # the workload got its identity, the files were written
        assert status.ready()
        assert set(status.snapshot()["outputs"].values()) == {"written"}

    def test_failed_write_is_unready_and_not_live(self, clock: Clock) -> None:
        status = make_status(clock)
        written(status, clock)
        status.write_failed(x509=True, jwt_paths=[])
        assert not status.ready() and not status.live()
        assert status.snapshot()["file_write_statuses"]["x509_write_status"] == "failed"
        written(status, clock)
        assert status.ready() and status.live()

    @pytest.mark.parametrize(("policy", "ready"), [("keep", True), ("unready", False), ("delete", False)])
    def test_identity_lost_per_policy(self, clock: Clock, policy: str, ready: bool) -> None:
        status = make_status(clock, policy)
        written(status, clock)
        status.set_identity_lost(True)
        assert status.ready() is ready
        assert status.snapshot()["identity"] == "lost"
        status.set_identity_lost(False)
        assert status.ready()

    def test_files_removed_resets_write_statuses(self, clock: Clock) -> None:
        status = make_status(clock, "delete")
        written(status, clock)
        status.files_removed()
        snap = status.snapshot()["file_write_statuses"]
        assert snap == {"x509_write_status": "unwritten", "jwt_write_status": {"certs/t.jwt": "unwritten"}}
        assert status.seconds_until_expiry() is None


class TestLiveness:
    def test_stream_down_too_long_is_not_live(self, clock: Clock) -> None:
        status = make_status(clock)
        state: SourceState[Digest] = SourceState("x509")
        status.watch("x509", state)
        assert status.live()  # starting counts as down, but not for long yet
        clock.now += 61
        assert not status.live()
        state.offer(Digest())
        assert status.live()
        state.on_error(AgentUnavailableError("gone"))
        clock.now += 30
        assert status.live()
        view = status.stream_view()["x509"]
        assert view["status"] == "reconnecting" and view["disconnected_seconds"] == 30
        clock.now += 31
        assert not status.live()

    def test_failed_stream_is_not_live(self, clock: Clock) -> None:
        status = make_status(clock)
        state: SourceState[Digest] = SourceState("jwt")
        status.watch("jwt", state)
        state.fail(AgentUnavailableError("bad"))
        assert not status.live()


@pytest.fixture
def server(clock: Clock) -> Iterator[tuple[HealthServer, SidecarStatus]]:
    status = make_status(clock)
    srv = HealthServer(
        status, port=0, liveness_path="/live", readiness_path="/ready", metrics_path="/metrics",
        metrics=renderer(status),
    ).start()  # fmt: skip
    yield srv, status
    srv.stop()


def test_http_endpoints_keep_spiffe_helper_shape(
    server: tuple[HealthServer, SidecarStatus], clock: Clock
) -> None:
    srv, status = server
    host, port = srv.address
    assert host == "127.0.0.1"
    base = f"http://{host}:{port}"
    code, body = health(base + "/ready")
    assert code == 503 and body["status"] == "Service Unavailable"
    assert body["health"]["file_write_statuses"] == {
        "x509_write_status": "unwritten",
        "jwt_write_status": {"certs/t.jwt": "unwritten"},
    }
    written(status, clock)
    code, body = health(base + "/ready")
    assert code == 200 and body["status"] == "OK"
    assert body["health"]["seconds_until_expiry"] == pytest.approx(100)
    assert health(base + "/live")[0] == 200
    assert http_get(base + "/nope")[0] == 404


def test_metrics_endpoint(server: tuple[HealthServer, SidecarStatus], clock: Clock) -> None:
    srv, status = server
    state: SourceState[Digest] = SourceState("x509")
    status.watch("x509", state)
    state.on_error(NoIdentityError("denied", code=grpc.StatusCode.PERMISSION_DENIED))
    written(status, clock)
    status.rotated("x509")
    status.write_failed(x509=True, jwt_paths=[])
    host, port = srv.address
    code, body = http_get(f"http://{host}:{port}/metrics")
    text = body.decode()
    assert code == 200
    assert 'spiffe_bridge_rotations_total{kind="x509"} 1.0' in text
    assert 'spiffe_bridge_reconnects_total{stream="x509"} 1.0' in text
    assert 'spiffe_bridge_last_error_code{stream="x509"} 7.0' in text  # PERMISSION_DENIED
    assert "spiffe_bridge_write_failures_total 1.0" in text
    assert "spiffe_bridge_svid_expiry_seconds 100.0" in text
    assert state.status is SourceStatus.IDENTITY_LOST


def test_bind_failure_is_a_clear_error(server: tuple[HealthServer, SidecarStatus]) -> None:
    srv, status = server
    with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1"):
        HealthServer(status, port=srv.address[1])


class TestLogs:
    def test_pem_and_jwt_are_redacted(self) -> None:
        token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzcGlmZmU6Ly94In0.c2lnbmF0dXJlLWJ5dGVz"
        pem = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----"
        assert logs.redact(f"token {token} key {pem} end") == "token [redacted JWT] key [redacted PEM] end"

    def test_json_format_and_filter(self) -> None:
        root = logging.getLogger()
        saved = (list(root.handlers), root.level)
        stream = io.StringIO()
        logs.setup("debug", "json", stream)
        try:
            token = "eyJhbGciOi.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
            logging.getLogger("spiffe_bridge.test").info("got %s", token, extra={"k": 1})
        finally:
            root.handlers[:] = saved[0]
            root.setLevel(saved[1])
        entry = json.loads(stream.getvalue().splitlines()[-1])
        assert entry["level"] == "info" and entry["logger"] == "spiffe_bridge.test" and entry["k"] == 1
        assert entry["message"] == "got [redacted JWT]"
