"""The relay's /live, /ready and /metrics: in a library Relay, and from ``spiffe-bridge relay``."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest
from relay_helpers import RawStream, RelayFactory, http_get

from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.health import HealthServer
from spiffe_bridge.relay import Relay
from spiffe_bridge.relay.health import RelayHealth, render_metrics


def _serve(relay: Relay) -> HealthServer:
    return HealthServer(
        RelayHealth(relay.all_stats), port=0, metrics_path="/metrics", metrics=render_metrics(relay.all_stats)
    ).start()


def test_ready_follows_the_identity(dev_agent: DevAgent, relay: Relay, streams: list[RawStream]) -> None:
    server = _serve(relay)
    try:
        base = "http://{}:{}".format(*server.address)
        code, body = http_get(base + "/ready")
        state = json.loads(body)
        assert code == 200 and state["status"] == "OK"
        assert state["health"]["sockets"][relay.socket_path]["feeds"]["FetchX509SVID"]["status"] == "serving"
        stream = RawStream("unix:" + relay.socket_path)
        streams.append(stream)
        stream.next()

        dev_agent.deny()  # the agent withdraws the identity: not ready, but alive
        assert stream.status() is grpc.StatusCode.PERMISSION_DENIED
        code, body = http_get(base + "/ready")
        feeds = json.loads(body)["health"]["sockets"][relay.socket_path]["feeds"]
        assert code == 503 and feeds["FetchX509SVID"]["status"] == "PERMISSION_DENIED"
        assert http_get(base + "/live")[0] == 200

        code, text = http_get(base + "/metrics")
        assert code == 200
        lines = text.decode().splitlines()
        socket = f'socket="{relay.socket_path}"'
        assert f'spiffe_bridge_relay_serving{{{socket},method="FetchX509SVID"}} 0' in lines
        assert f'spiffe_bridge_relay_upstream_updates_total{{{socket},method="FetchX509SVID"}} 1' in lines
        assert f'spiffe_bridge_relay_messages_sent_total{{{socket},method="FetchX509SVID"}} 1' in lines
        assert f"spiffe_bridge_relay_rejected_calls_total{{{socket}}} 0" in lines
        assert "# TYPE spiffe_bridge_relay_invalid_updates_total counter" in lines
    finally:
        server.stop()


def test_a_stopped_relay_is_not_live(dev_agent: DevAgent, relay_factory: RelayFactory) -> None:
    relay = relay_factory(dev_agent.address)
    health = RelayHealth(relay.all_stats)
    assert health.live()
    relay.stop()
    assert not health.live() and not health.ready()
    assert health.snapshot() == {"relay": "not answering"}


@pytest.mark.dev_agent(identities=["spiffe://example.org/web"])
def test_cli_serves_health(dev_agent: DevAgent, tmp_path_factory: pytest.TempPathFactory) -> None:
    listen = f"unix:///tmp/sbr-health-{tmp_path_factory.mktemp('h').name}.sock"
    cmd = [sys.executable, "-m", "spiffe_bridge", "relay", "--upstream", dev_agent.address]
    cmd += ["--listen", listen, "--health-addr", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("relay serving ")
        line = proc.stdout.readline()
        assert line.startswith("relay health on http://127.0.0.1:"), line
        base = line.split()[3]
        assert http_get(base + "/live")[0] == 200
        code, _ = http_get(base + "/metrics")
        assert code == 200
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_refuses_a_taken_health_port(dev_agent: DevAgent, relay: Relay) -> None:
    server = _serve(relay)
    try:
        port = server.address[1]
        done = subprocess.run(
            [sys.executable, "-m", "spiffe_bridge", "relay", "--upstream", dev_agent.address,
             "--listen", "unix:///tmp/sbr-unused.sock", "--health-addr", str(port)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 1
        assert done.stderr.startswith(f"relay: health server cannot listen on 127.0.0.1:{port}")
    finally:
        server.stop()
