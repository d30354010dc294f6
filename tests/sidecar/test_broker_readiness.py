"""Why a broker-mode output is not ready, as /ready and the log say it (sidecar.broker_outputs)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
from sidecar_helpers import DEADLINE, free_port, health, sidecar, write_conf

from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.errors import (
    AgentUnavailableError,
    WorkloadExitedError,
    WorkloadNotEntitledError,
    WorkloadNotFoundError,
)
from spiffe_bridge.sidecar.broker_outputs import WorkloadUpdate, not_ready_reason


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (WorkloadNotEntitledError("no SVIDs for pid 7"), "NoIdentity: no SVIDs for pid 7"),
        (WorkloadExitedError("the referenced process (pid 7) has exited"), "process exited: "),
        (WorkloadNotFoundError("pid 7 does not exist"), "process exited: "),
        (LookupError("no PID in /run/nginx.pid"), "no workload process: no PID in /run/nginx.pid"),
        (AgentUnavailableError("connection refused"), "unavailable: "),
    ],
)
def test_reason_names_the_kind_and_the_detail(error: Exception, reason: str) -> None:
    text = not_ready_reason(WorkloadUpdate(0, 7, None, error))
    assert text.startswith(reason) and str(error) in text


def test_daemon_with_a_failing_broker_client_keeps_its_own_outputs(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    """No SVID for ``broker.spiffe_id``: the workload output alone is not ready, and READY=1 still comes."""
    port = free_port()
    own, theirs = tmp_path / "own", tmp_path / "nginx"
    conf = write_conf(
        tmp_path,
        f"""
agent_address = "{dev_agent.address}"
broker {{
  address = "unix://{tmp_path / "broker.sock"}"
  spiffe_id = "spiffe://example.org/not-one-of-ours"
}}
health_checks {{
  listener_enabled = true
  bind_port = {port}
}}
health_bind_address = "127.0.0.1"
outputs = [
  {{ format = "pem", dir = "{theirs}", workload_pid = {os.getpid()} }},
  {{ format = "pem", dir = "{own}" }},
]
""",
    )
    notify_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(notify_path)
        systemd.settimeout(DEADLINE)
        with sidecar(["-config", str(conf)], tmp_path, env={"NOTIFY_SOCKET": notify_path}) as proc:
            assert systemd.recv(64) == b"READY=1", proc.log
            assert (own / "svid.pem").is_file()
            code, body = health(f"http://127.0.0.1:{port}/ready")
            assert code == 503, body
            outputs = body["health"]["outputs"]
            assert outputs[str(own)] == "written"
            assert outputs[str(theirs)].startswith("not ready: unavailable: the Broker API client failed")
            assert "not-one-of-ours" in outputs[str(theirs)]
            assert health(f"http://127.0.0.1:{port}/live")[0] == 200
            assert not theirs.exists() or not any(theirs.iterdir())  # never the bridge's own SVID there
            assert proc.stop() == 0, proc.log


def test_a_workload_output_is_ready_only_with_its_tokens_and_only_its_current_processes() -> None:
    """WorkloadFeed: context + every token, or not ready; tokens of an exited or replaced PID are void."""
    from _support.pki import x509_response

    from spiffe_bridge.client import decode_x509_context
    from spiffe_bridge.devagent.ca import TrustDomainCA
    from spiffe_bridge.jwtsvid import JwtSvid
    from spiffe_bridge.sidecar.broker_outputs import TokenUpdate
    from spiffe_bridge.sidecar.config import JwtSvidConfig, build, parse_text
    from spiffe_bridge.sidecar.plan import DirPlan
    from spiffe_bridge.sidecar.status import SidecarStatus
    from spiffe_bridge.sidecar.workload_feed import WorkloadFeed

    ca = TrustDomainCA("example.org")
    ctx = decode_x509_context(x509_response(ca, "spiffe://example.org/api"))
    token = JwtSvid.parse_insecure(ca.mint_jwt_svid("spiffe://example.org/api", ["db"], ttl=300))
    config = build(parse_text('[[outputs]]\nformat = "pem"\ndir = "/d"\n', "toml"), environ={})
    plan = DirPlan("/d", "flat", workload=0, jwt_svids=[JwtSvidConfig("db", (), "db.token")])
    status = SidecarStatus(x509_configured=False, jwt_paths=[])
    feed = WorkloadFeed(config, [plan], status)

    feed.apply(WorkloadUpdate(0, 7, ctx))
    assert not feed.decided() and feed.ready() == {}  # the X.509 files alone are not the output
    assert status.not_ready["/d"] == "waiting for the workload's JWT-SVIDs"
    feed.apply(TokenUpdate(0, 8, "db.token", token))  # another PID's token: never this output's
    assert feed.ready() == {}
    feed.apply(TokenUpdate(0, 7, "db.token", token))
    assert feed.decided() and feed.ready()[0].context is ctx and feed.ready()[0].tokens == {"db.token": token}

    feed.apply(WorkloadUpdate(0, 7, None, WorkloadExitedError("pid 7 exited")))
    assert feed.decided() and feed.ready() == {}
    feed.apply(TokenUpdate(0, 7, "db.token", token))  # minted just before the exit: dropped
    feed.apply(WorkloadUpdate(0, 9, ctx))  # a new process: its own tokens first
    assert feed.ready() == {} and status.not_ready["/d"] == "waiting for the workload's JWT-SVIDs"
    # a token that cannot be minted is a verdict (READY=1 does not wait for it), naming the file
    feed.apply(TokenUpdate(0, 9, "db.token", None, AgentUnavailableError("FetchJWTSVID failed")))
    assert feed.decided() and feed.ready() == {}
    assert status.not_ready["/d"].startswith("no JWT-SVID for db.token: FetchJWTSVID failed")
    feed.apply(TokenUpdate(0, 9, "db.token", token))
    assert feed.ready()[0].tokens == {"db.token": token}
    feed.apply(TokenUpdate(0, 9, "db.token", None, AgentUnavailableError("refresh failed")))
    assert 0 in feed.ready()  # the token held is still valid: the output stays written


async def test_one_shot_gives_up_at_its_deadline_when_a_token_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The X.509-SVID issued but the JWT-SVID refused (NoIdentity) looped past the deadline forever:
    the token's own timeout overwrote the time left that decides whether to give up."""
    from _support.pki import x509_response

    from spiffe_bridge.client import decode_x509_context
    from spiffe_bridge.devagent.ca import TrustDomainCA
    from spiffe_bridge.errors import NoIdentityError
    from spiffe_bridge.sidecar import broker_outputs
    from spiffe_bridge.sidecar.config import build, parse_text

    context = decode_x509_context(x509_response(TrustDomainCA("example.org"), "spiffe://example.org/w"))
    calls: list[str] = []

    class Client:
        async def __aenter__(self) -> Client:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        async def fetch_x509_context(self, pid: int, timeout: float) -> object:
            calls.append("x509")
            return context

        async def fetch_jwt_svid(self, pid: int, *audiences: str, timeout: float) -> object:
            calls.append("jwt")
            raise NoIdentityError(f"no JWT-SVID for pid {pid}")

    monkeypatch.setattr(broker_outputs, "client_for", lambda config, source: Client())
    text = f"""agent_address = "/run/a.sock"
broker {{
  address = "unix:///run/broker.sock"
}}
outputs = [{{ format = "pem", dir = "/x", workload_pid = {os.getpid()},
  jwt_svids = [{{ jwt_audience = "db", jwt_svid_file_name = "db.token" }}] }}]
"""
    config = build(parse_text(text, "hcl"), environ={})
    with pytest.raises(NoIdentityError, match="no JWT-SVID"):
        await asyncio.wait_for(broker_outputs.fetch_once(config, None, timeout=0.3), DEADLINE)  # type: ignore[arg-type]
    assert calls[-1] == "jwt"
