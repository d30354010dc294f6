"""``spiffe-bridge relay --log-format json``: structured lines, outage length, and a parsed /metrics page."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from relay_helpers import http_get

import spiffe_bridge
from spiffe_bridge.devagent.server import DevAgent


class Lines:
    """Reads a process's stderr on a thread; a test awaits the JSON line it expects."""

    def __init__(self, stream: IO[str]) -> None:
        self.entries: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._cond:
                self.raw.append(line)
                self.entries.append(json.loads(line))  # a non-JSON line fails the reader's test below
                self._cond.notify_all()

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.entries if match(e)]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line {what}; got: {self.raw}")
                self._cond.wait(left)


@pytest.mark.dev_agent(identities=["spiffe://example.org/web"])
def test_json_logs_outage_and_metrics(dev_agent: DevAgent, tmp_path_factory: pytest.TempPathFactory) -> None:
    listen = f"unix:///tmp/sbr-obs-{tmp_path_factory.mktemp('o').name}.sock"
    cmd = [
        sys.executable,
        "-m",
        "spiffe_bridge",
        "relay",
        "--upstream",
        dev_agent.address,
        "--listen",
        listen,
    ]
    cmd += ["--health-addr", "127.0.0.1:0", "--log-format", "json", "--hold", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        lines = Lines(proc.stderr)
        assert proc.stdout.readline().startswith("relay serving ")
        base = proc.stdout.readline().split()[3]
        x509 = lambda e: e.get("stream") == "FetchX509SVID"  # noqa: E731
        update = lines.wait_for(lambda e: x509(e) and "update v1" in e["message"], "for the first update")
        assert update["level"] == "info" and update["version"] == 1 and update["address"] == dev_agent.address

        code, body = http_get(base + "/metrics")
        assert code == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }
        python = ".".join(map(str, sys.version_info[:3]))
        assert (
            samples[
                ("spiffe_bridge_build_info", (("python", python), ("version", spiffe_bridge.__version__)))
            ]
            == 1
        )
        assert samples[("process_open_fds", ())] >= 3 and samples[("process_resident_memory_bytes", ())] > 0
        assert abs(samples[("process_start_time_seconds", ())] - time.time()) < 300
        socket = Path(listen.removeprefix("unix://"))
        key = (
            "spiffe_bridge_relay_upstream_updates_total",
            (("method", "FetchX509SVID"), ("socket", str(socket))),
        )
        assert samples[key] == 1

        dev_agent.stop()
        lost = lines.wait_for(lambda e: e["level"] == "warning" and x509(e), "on the loss")
        assert lost["address"] == dev_agent.address
        dev_agent.start()
        back = lines.wait_for(lambda e: x509(e) and "upstream is back" in e["message"], "on recovery")
        assert back["level"] == "info" and back["duration_s"] > 0
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
