"""Structured JSON logs and complete metrics of a real running sidecar (#17.3, #17.5)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from _support.daemon import in_process
from _support.wait import wait_until
from prometheus_client.parser import text_string_to_metric_families
from sidecar_helpers import check_exposition, free_port, http_get, sidecar, write_conf

import spiffe_bridge
from spiffe_bridge import logs
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.sidecar import plan
from spiffe_bridge.sidecar.actions import RunCommand
from spiffe_bridge.sidecar.config import build, parse_text
from spiffe_bridge.sidecar.process import OUTPUT_LIMIT
from spiffe_bridge.sidecar.runner import Daemon

X509 = """
cert_dir = "{dir}"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
"""


class JsonLines(logging.Handler):
    """Formats every record as the daemon's JSON line and lets a test await a matching one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logs.JsonFormatter())
        self.entries: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        entry = json.loads(self.format(record))
        with self._cond:
            self.entries.append(entry)
            self._cond.notify_all()

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], what: str, timeout: float = 20
    ) -> dict[str, Any]:
        """The first entry (old or new) that ``match`` accepts; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for entry in self.entries:
                    if match(entry):
                        return entry
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line {what}; got: {[e['message'] for e in self.entries]}")
                self._cond.wait(left)


@contextmanager
def captured() -> Iterator[JsonLines]:
    handler = JsonLines()
    logger = logging.getLogger("spiffe_bridge")
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


@pytest.fixture
def late_agent() -> Iterator[DevAgent]:
    """A dev agent on a short /tmp path, not started yet."""
    directory = tempfile.mkdtemp(prefix="sbr-obs-", dir="/tmp")
    agent = DevAgent(os.path.join(directory, "agent.sock"))
    try:
        yield agent
    finally:
        agent.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_waits_aloud_for_a_missing_socket_then_logs_loss_and_recovery(
    tmp_path: Path, late_agent: DevAgent
) -> None:
    socket = late_agent.socket_path
    config = build(parse_text(f'agent_address = "unix://{socket}"\n' + X509.format(dir=tmp_path), "hcl"), {})
    daemon = Daemon(config, plan.build(config, {})[0])
    daemon.wait_log_interval = 0.05  # the real interval is 10 s
    with captured() as lines, in_process(daemon=daemon):
        waiting = lines.wait_for(lambda e: e["message"].startswith("still waiting"), "while waiting")
        assert waiting["level"] == "info" and waiting["stream"] == "x509"
        assert waiting["address"] == f"unix://{socket}" and waiting["duration_s"] >= 0
        assert f"socket {socket} does not exist yet" in waiting["message"]
        assert daemon.status.snapshot()["identity"] == "waiting"  # not "present" before anything came

        agent = late_agent.start()
        update = lines.wait_for(lambda e: e["message"].startswith("received X.509 update"), "on the update")
        svid = agent.svids[0]
        assert update["spiffe_id"] == str(svid.spiffe_id)
        assert update["serial"] == format(svid.leaf.serial_number, "x")
        assert update["not_after"] == svid.leaf.not_valid_after_utc.isoformat()
        wrote = lines.wait_for(lambda e: e["message"].startswith("wrote "), "per output dir")
        assert wrote["dir"] == str(tmp_path) and wrote["files"] == 3 and wrote["duration_s"] >= 0
        wait_until(lambda: daemon.status.snapshot()["identity"] == "present", "identity present")

        agent.stop()
        lost = lines.wait_for(lambda e: e["message"].startswith("lost the x509 stream"), "on the loss")
        assert lost["level"] == "warning" and lost["stream"] == "x509"
        assert lost["grpc_code"] in ("UNAVAILABLE", "CANCELLED", None)
        agent.start()
        back = lines.wait_for(lambda e: e["message"].startswith("the x509 stream is back"), "on recovery")
        assert back["level"] == "info" and back["stream"] == "x509" and back["duration_s"] > 0


def scrape(url: str) -> dict[str, Any]:
    """Parse a /metrics page strictly and with prometheus_client's parser: {sample name+labels: value}."""
    code, body = http_get(url)
    assert code == 200
    text = body.decode()
    check_exposition(text)
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_real_daemon_json_logs_reload_output_and_metrics(dev_agent: DevAgent, tmp_path: Path) -> None:
    port = free_port()
    certs = tmp_path / "certs"
    script = "import sys; print('reloaded-out'); print('warn-err', file=sys.stderr)"
    text = X509.format(dir=certs) + f'agent_address = "{dev_agent.address}"\n'
    text += f"reload_command = {json.dumps([sys.executable, '-c', script])}\n"
    text += (
        f"health_checks {{\n listener_enabled = true\n bind_port = {port}\n}}\nmetrics {{ enabled = true }}\n"
    )
    conf = write_conf(tmp_path, text)
    base = f"http://127.0.0.1:{port}"
    before = time.time()
    with sidecar(["-config", str(conf), "--log-format", "json"], tmp_path) as proc:
        wait_until(lambda: http_get(base + "/ready")[0] == 200, "ready")
        wait_until(lambda: "reload done" in proc.log, "the reload")
        metrics = scrape(base + "/metrics")
        assert proc.stop() == 0
    entries = [json.loads(line) for line in proc.log.splitlines()]  # every line is JSON: no raw output
    by_message = {e["message"].split(" ")[0] + " " + e["message"].split(" ")[1]: e for e in entries}
    update = by_message["received X.509"]
    assert update["spiffe_id"] == str(dev_agent.svids[0].spiffe_id)
    assert update["serial"] == format(dev_agent.svids[0].leaf.serial_number, "x")
    assert by_message["wrote 3"]["dir"] == str(certs)
    reload = next(e for e in entries if e["message"].startswith("reload command"))
    assert reload["stdout"] == "reloaded-out" and reload["stderr"] == "warn-err" and reload["exit_code"] == 0
    assert reload["reload_command"] == sys.executable and reload["duration_s"] >= 0
    assert by_message["reload done"]["duration_s"] >= 0

    not_after = dev_agent.svids[0].leaf.not_valid_after_utc.timestamp()
    assert metrics[("spiffe_bridge_svid_not_after_timestamp_seconds", ())] == pytest.approx(not_after)
    rotated = metrics[("spiffe_bridge_last_rotation_timestamp_seconds", (("kind", "x509"),))]
    assert before <= rotated <= time.time()
    dir_label = (("dir", str(certs)),)
    assert metrics[("spiffe_bridge_output_up", dir_label)] == 1
    assert metrics[("spiffe_bridge_output_write_duration_seconds_count", dir_label)] >= 1
    assert metrics[("spiffe_bridge_output_write_duration_seconds_sum", dir_label)] > 0
    assert metrics[("spiffe_bridge_reload_duration_seconds_count", ())] == 1
    assert metrics[("spiffe_bridge_reload_duration_seconds_sum", ())] > 0
    python = ".".join(map(str, sys.version_info[:3]))
    build_info = (("python", python), ("version", spiffe_bridge.__version__))
    assert metrics[("spiffe_bridge_build_info", build_info)] == 1
    assert before - 30 <= metrics[("process_start_time_seconds", ())] <= before + 1
    assert metrics[("process_resident_memory_bytes", ())] > 1_000_000
    assert metrics[("process_open_fds", ())] >= 3
    assert metrics[("process_cpu_seconds_total", ())] > 0


def test_reload_output_is_bounded_redacted_and_kept_out_of_the_stream() -> None:
    key = "-----BEGIN PRIVATE KEY-----\\nMIGHAgEAMBMG\\n-----END PRIVATE KEY-----"
    script = f"import sys; sys.stdout.write('x' * 200000); print('{key}', file=sys.stderr); sys.exit(3)"
    action = RunCommand([sys.executable, "-c", script], timeout=30)
    with captured() as lines:
        assert asyncio.run(action.after_write(first=False, changed=True)) is False
    entry = lines.wait_for(lambda e: e["message"].startswith("reload command"), "for the reload", timeout=0)
    assert entry["level"] == "error" and entry["exit_code"] == 3
    assert entry["stdout"] == "x" * OUTPUT_LIMIT + f" [... {200000 - OUTPUT_LIMIT} more bytes]"
    assert entry["stderr"] == "[redacted PEM]" and "PRIVATE" not in json.dumps(lines.entries)
