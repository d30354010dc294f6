"""``spiffe-bridge doctor --address``: each agent check on a good and on a broken setup."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import pwd
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from _support.pki import der, key_der
from tools_helpers import NOBODY, cli_as, need_root, run, run_json

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.devagent import Rpc

ALL_AGENT_CHECKS = [
    "socket exists",
    "is a socket",
    "connectable",
    "answers HTTP/2",
    "honours the header",
    "identity issued",
    "clock skew",
    "hint / SPIFFE ID",
]


def by_name(doc: Any) -> dict[str, Any]:
    return {c["check"]: c for c in doc["checks"]}


def doctor(capsys: pytest.CaptureFixture[str], address: str, *extra: str) -> tuple[int, dict[str, Any]]:
    code, doc = run_json(capsys, "doctor", "--address", address, "--timeout", "5", *extra)
    return code, by_name(doc)


def test_good_agent_passes_every_check(dev_agent: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = doctor(capsys, dev_agent.address)
    assert code == 0
    assert list(checks) == ALL_AGENT_CHECKS
    assert all(c["ok"] for c in checks.values())
    assert "refused with InvalidArgument" in checks["honours the header"]["detail"]
    code, out, _ = run(capsys, "doctor", "--address", dev_agent.address)
    assert code == 0
    assert out.splitlines()[0].startswith("PASS socket exists: ")
    assert out.splitlines()[-1] == "8 passed, 0 failed, 0 not checked"


def test_missing_socket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = doctor(capsys, f"unix://{tmp_path}/agent.sock")
    assert code == 1
    assert not checks["socket exists"]["ok"] and "does not exist" in checks["socket exists"]["detail"]
    assert checks["socket exists"]["fix"].startswith("start the SPIRE agent")
    assert all(checks[n]["skipped"] for n in ALL_AGENT_CHECKS[1:])
    code, out, _ = run(capsys, "doctor", "--address", f"unix://{tmp_path}/agent.sock")
    assert "SKIP is a socket: not checked (socket exists failed)" in out


def test_path_that_is_not_a_socket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "agent.sock").write_text("")
    code, checks = doctor(capsys, str(tmp_path / "agent.sock"))
    assert code == 1 and checks["socket exists"]["ok"]
    assert checks["is a socket"]["detail"].endswith("is a regular file")


def test_stale_socket_refuses_connections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "agent.sock")
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(path)  # bound, never listening: what a crashed agent leaves behind
    code, checks = doctor(capsys, path)
    assert code == 1 and checks["is a socket"]["ok"]
    assert "connection refused" in checks["connectable"]["detail"]


def test_socket_without_permission_names_eacces(dev_agent_factory: Any) -> None:
    need_root()
    agent = dev_agent_factory(socket_mode=0o700)
    os.chmod(os.path.dirname(agent.socket_path), 0o755)
    good = cli_as(0, "doctor", "--address", agent.address, "--json")
    assert good.returncode == 0, good.stdout
    result = cli_as(NOBODY, "doctor", "--address", agent.address, "--json")
    assert result.returncode == 1
    import json

    checks = by_name(json.loads(result.stdout))
    assert checks["socket exists"]["ok"] and checks["is a socket"]["ok"]
    detail = checks["connectable"]["detail"]
    assert detail.startswith(f"EACCES: uid {NOBODY} gid {NOBODY}") and "root:root 0700" in detail


def test_unsearchable_socket_directory(dev_agent: Any) -> None:
    need_root()
    os.chmod(os.path.dirname(dev_agent.socket_path), 0o700)
    result = cli_as(NOBODY, "doctor", "--address", dev_agent.address)
    assert result.returncode == 1
    assert (
        f"FAIL socket exists: {dev_agent.socket_path}: a parent directory is not searchable" in result.stdout
    )


@pytest.fixture
def http1_socket(tmp_path: Path) -> Iterator[str]:
    """A Unix socket whose server answers like an HTTP/1.1 server (not gRPC)."""
    path = str(tmp_path / "http1.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                try:
                    if conn.recv(1024):
                        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass  # the client went away (the connect-only check)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path
    stop.set()
    server.close()
    thread.join(5)


def test_server_that_does_not_speak_http2(http1_socket: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = doctor(capsys, http1_socket)
    assert code == 1 and checks["connectable"]["ok"]
    assert "does not speak HTTP/2 (answered 'HTTP/1.1" in checks["answers HTTP/2"]["detail"]
    assert checks["honours the header"]["skipped"]


@pytest.fixture
def headerless_server(dev_agent: Any, tmp_path: Path) -> Iterator[str]:
    """A gRPC server answering FetchX509SVID with the dev agent's material, header or not."""

    def fetch(request: Any, context: Any) -> Iterator[Any]:
        yield dev_agent.x509_svid_response()

    handler = grpc.method_handlers_generic_handler(
        "SpiffeWorkloadAPI",
        {
            "FetchX509SVID": grpc.unary_stream_rpc_method_handler(
                fetch,
                request_deserializer=pb.X509SVIDRequest.FromString,
                response_serializer=pb.X509SVIDResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(ThreadPoolExecutor(4), handlers=[handler])
    path = str(tmp_path / "lax.sock")
    server.add_insecure_port(f"unix:{path}")
    server.start()
    yield path
    server.stop(0)


def test_server_that_ignores_the_security_header(
    headerless_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, checks = doctor(capsys, headerless_server)
    assert code == 1
    assert checks["answers HTTP/2"]["ok"]
    header = checks["honours the header"]
    assert not header["ok"] and "answered a call without the workload.spiffe.io header" in header["detail"]
    # the other checks still run: the identity is there
    assert checks["identity issued"]["ok"] and checks["clock skew"]["ok"]


def test_permission_denied_shows_who_we_are(dev_agent: Any, capsys: pytest.CaptureFixture[str]) -> None:
    dev_agent.deny()
    code, checks = doctor(capsys, dev_agent.address)
    assert code == 1
    detail = checks["identity issued"]["detail"]
    exe = os.readlink("/proc/self/exe")
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert f"uid {os.geteuid()}, gid {os.getegid()}, exe {exe}" in detail
    assert f"unix:uid:{os.geteuid()} unix:user:{user} unix:gid:{os.getegid()}" in detail
    digest = hashlib.sha256(Path(exe).read_bytes()).hexdigest()
    assert f"only with discover_workload_path = true also: unix:path:{exe} unix:sha256:{digest}" in detail
    assert "spire-server entry create" in checks["identity issued"]["fix"]
    assert checks["clock skew"]["skipped"] and checks["hint / SPIFFE ID"]["skipped"]


@pytest.mark.dev_agent(socket_mode=0o666)  # nobody must reach the socket to be denied by the agent
def test_permission_denied_as_nobody_names_nobody(dev_agent: Any) -> None:
    need_root()
    os.chmod(os.path.dirname(dev_agent.socket_path), 0o755)
    dev_agent.deny()
    result = cli_as(NOBODY, "doctor", "--address", dev_agent.address)
    assert result.returncode == 1
    assert f"unix:uid:{NOBODY} unix:user:nobody unix:gid:{NOBODY}" in result.stdout


def _forged_response(agent: Any, **window: dt.datetime) -> Any:
    leaf, key = agent.ca.forge_leaf(uris=["spiffe://example.org/workload"], **window)
    return pb.X509SVIDResponse(
        svids=[
            pb.X509SVID(
                spiffe_id="spiffe://example.org/workload",
                x509_svid=der(leaf),
                x509_svid_key=key_der(key),
                bundle=agent.ca.bundle_der(),
            )
        ]
    )


def test_clock_behind_the_agent(dev_agent: Any, capsys: pytest.CaptureFixture[str]) -> None:
    now = dt.datetime.now(dt.UTC)
    dev_agent.respond_next_with(
        Rpc.FETCH_X509_SVID, _forged_response(dev_agent, not_before=now + dt.timedelta(minutes=10))
    )
    code, checks = doctor(capsys, dev_agent.address)
    assert code == 1
    skew = checks["clock skew"]
    assert not skew["ok"] and "this clock is behind the agent's" in skew["detail"]
    assert "synchronise the clocks" in skew["fix"]
    assert "not valid before" in checks["identity issued"]["detail"]


def test_svid_already_expired_by_this_clock(dev_agent: Any, capsys: pytest.CaptureFixture[str]) -> None:
    now = dt.datetime.now(dt.UTC)
    window = {"not_before": now - dt.timedelta(hours=2), "not_after": now - dt.timedelta(hours=1)}
    dev_agent.respond_next_with(Rpc.FETCH_X509_SVID, _forged_response(dev_agent, **window))
    code, checks = doctor(capsys, dev_agent.address)
    assert code == 1
    assert "expired at" in checks["clock skew"]["detail"]


def test_hint_and_spiffe_id_that_exist_and_do_not(dev_agent: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from spiffe_bridge.devagent.identity import Identity

    dev_agent.set_identities(
        [
            Identity("spiffe://example.org/web", hint="external"),
            Identity("spiffe://example.org/db", hint="internal"),
        ]
    )
    code, checks = doctor(capsys, dev_agent.address, "--hint", "internal")
    assert (
        code == 0
        and "spiffe://example.org/db (hint 'internal') is served" in checks["hint / SPIFFE ID"]["detail"]
    )
    code, checks = doctor(capsys, dev_agent.address, "--spiffe-id", "spiffe://example.org/db")
    assert code == 0
    code, checks = doctor(capsys, dev_agent.address, "--hint", "admin")
    assert code == 1
    detail = checks["hint / SPIFFE ID"]["detail"]
    assert "no SVID with hint='admin'" in detail
    assert "spiffe://example.org/web (hint 'external'), spiffe://example.org/db (hint 'internal')" in detail


def test_no_address_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPIFFE_ENDPOINT_SOCKET", raising=False)
    assert run(capsys, "doctor")[0] == 2
