"""The daemon under attack (issue #14): nothing it reads or runs may wedge its one event loop.

In-process against the dev agent over a real Unix socket: a FIFO planted at the PID file, a
stalled event loop (liveness and systemd's watchdog must notice), a SIGTERM in the middle of a
write, one output that cannot be rendered, and idle connections to the health port under a
small file-descriptor limit (the last one as a real ``spiffe-bridge run`` subprocess).
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from _support.daemon import in_process
from _support.wait import wait_until
from cryptography import x509
from sidecar_helpers import free_port, health, http_get, write_conf

from spiffe_bridge import fileset
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.fileset import read_current
from spiffe_bridge.sidecar import plan
from spiffe_bridge.sidecar.config import Config, build, parse_text
from spiffe_bridge.sidecar.runner import Daemon

NAMES = ["svid.pem", "svid_key.pem", "svid_bundle.pem"]
PEM = """
cert_dir = "{dir}"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
"""


def config_for(text: str, agent: DevAgent) -> Config:
    return build(parse_text(f'agent_address = "{agent.address}"\n{text}', "hcl"), environ={})


def serial(path: Path) -> int | None:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())[0].serial_number
    except (FileNotFoundError, ValueError):
        return None


def health_block(port: int, stall: str = "10s") -> str:
    return f'health_checks {{ listener_enabled = true, bind_port = {port} }}\nhealth_max_stall = "{stall}"\n'


def test_a_fifo_at_the_pid_file_does_not_wedge_the_daemon(dev_agent: DevAgent, tmp_path: Path) -> None:
    """#14.2: open() of a FIFO blocked the daemon's only thread; rotation and SIGTERM stopped."""
    certs, fifo, port = tmp_path / "certs", tmp_path / "app.pid", free_port()
    os.mkfifo(fifo)
    text = PEM.format(dir=certs) + f'pid_file_name = "{fifo}"\nrenew_signal = "SIGHUP"\n' + health_block(port)
    with in_process(config_for(text, dev_agent)) as daemon:
        wait_until(lambda: daemon.status.reloads >= 1, "first write and its reload")
        new = dev_agent.rotate()[0].serial_number
        wait_until(lambda: serial(certs / "svid.pem") == new, "the rotation written despite the FIFO")
        wait_until(lambda: daemon.status.reload_failures >= 1, "the refused PID file counted as a failure")
        assert http_get(f"http://127.0.0.1:{port}/ready")[0] == 200


def test_a_stalled_loop_fails_live_and_starves_the_systemd_watchdog(
    dev_agent: DevAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    notify_path = str(tmp_path / "notify")
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(notify_path)
    monkeypatch.setenv("NOTIFY_SOCKET", notify_path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # WatchdogSec=0.4s: ping every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    def received() -> list[bytes]:
        got = []
        systemd.setblocking(False)
        try:
            while True:
                got.append(systemd.recv(64))
        except BlockingIOError:
            return got

    base = f"http://127.0.0.1:{port}"
    text = PEM.format(dir=tmp_path / "certs") + health_block(port, "1s")
    release = threading.Event()
    try:
        with in_process(config_for(text, dev_agent)) as daemon:
            wait_until(lambda: health(base + "/live")[0] == 200, "live")
            wait_until(lambda: b"WATCHDOG=1" in received(), "systemd watchdog pings while the loop runs")
            assert daemon.loop is not None
            daemon.loop.call_soon_threadsafe(release.wait, 60)  # something blocks the loop
            _, body = wait_until(lambda: (r := health(base + "/live"))[0] == 503 and r, "/live fails")
            assert body["health"]["event_loop_stalled_seconds"] > 1
            assert health(base + "/ready")[0] == 503
            received()  # whatever was sent before the watchdog saw the stall
            for _ in range(3):  # three more probes, each answered by the watchdog thread
                assert health(base + "/live")[0] == 503
            assert b"WATCHDOG=1" not in received(), "systemd must not be told all is well"
            release.set()
            wait_until(lambda: health(base + "/live")[0] == 200, "/live back once the loop runs")
            wait_until(lambda: b"WATCHDOG=1" in received(), "pings resume")
    finally:
        release.set()
        systemd.close()


def test_sigterm_during_a_write_is_handled_after_it(
    dev_agent: DevAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signal lands between two files of a set; the set is still written whole, then the daemon exits."""
    certs = tmp_path / "certs"
    from spiffe_bridge.fileset import _safeio  # where every file of a set is created

    original = _safeio.write_new
    calls: list[str] = []

    def write_new(dir_fd: int, name: str, *args: Any) -> None:
        calls.append(name)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to the daemon in the middle of its write
        original(dir_fd, name, *args)

    monkeypatch.setattr(_safeio, "write_new", write_new)
    plans, _ = plan.build(config_for(PEM.format(dir=certs), dev_agent), {})
    daemon = Daemon(config_for(PEM.format(dir=certs), dev_agent), plans)
    guard = threading.Timer(30, daemon.request_stop, args=(99,))  # never hang the suite
    guard.start()
    try:
        assert daemon.run() == 0  # on the main thread, so the real signal handlers are installed
    finally:
        guard.cancel()
    assert len(calls) >= 3
    got = read_current(certs, NAMES)
    assert serial(certs / "svid.pem") == dev_agent.svids[0].serial_number
    assert all(got[n] for n in NAMES)
    assert not [e for e in os.listdir(certs) if e.endswith(".tmp") or "_tmp." in e]


def test_one_output_that_cannot_render_does_not_stop_the_others(
    dev_agent: DevAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#14.10: a pkcs12 render raising inside the runner ended the whole sidecar."""
    certs, p12 = tmp_path / "certs", tmp_path / "p12"
    text = PEM.format(dir=certs) + f'outputs = [{{format = "pkcs12", dir = "{p12}"}}]\n'
    real_render = plan.DirPlan.render

    def render(self: plan.DirPlan, *args: Any) -> list[fileset.FileSpec]:
        if self.directory == str(p12):
            raise TypeError("pkcs12 serialisation broke (as with cryptography 43)")
        return real_render(self, *args)

    monkeypatch.setattr(plan.DirPlan, "render", render)
    with in_process(config_for(text, dev_agent)) as daemon:
        wait_until(lambda: serial(certs / "svid.pem") is not None, "the healthy output written")
        new = dev_agent.rotate()[0].serial_number
        wait_until(lambda: serial(certs / "svid.pem") == new, "and rotated")
        snap = daemon.status.snapshot()
        assert snap["outputs"][str(certs)] == "written"
        assert snap["outputs"][str(p12)].startswith("failed: pkcs12 serialisation broke")
        assert snap["write_failures"] >= 1 and not daemon.status.ready()
        assert not p12.exists() or not any(p12.iterdir())


def held(pid: int, port: int) -> int:
    """TCP connections accepted on ``port`` that process ``pid`` holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
            count += 1
    return count


def test_idle_health_connections_under_a_small_fd_limit_do_not_stop_rotation(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    """#14.3: ~123 idle connections under ulimit -n 128 made the next write fail with EMFILE."""
    certs, port = tmp_path / "certs", free_port()
    conf = write_conf(
        tmp_path, f'agent_address = "{dev_agent.address}"\n' + PEM.format(dir=certs) + health_block(port)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}
    log = (tmp_path / "sidecar.log").open("wb")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    proc = subprocess.Popen(
        [sys.executable, "-m", "spiffe_bridge", "run", "-config", str(conf)],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=limit,
    )  # fmt: skip
    idle: list[socket.socket] = []
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/ready")[0] == 200, "ready")
        for _ in range(20):  # 200 clients in batches of 10, each batch given up to 0.5 s to connect
            batch = [socket.socket() for _ in range(10)]
            for sock in batch:
                sock.setblocking(False)  # those beyond the listen backlog keep retrying their SYN
                sock.connect_ex(("127.0.0.1", port))
            select.select([], batch, [], 0.5)
            idle += batch
        wait_until(lambda: held(proc.pid, port) == 16, "the daemon to hold its 16 idle clients")
        new = dev_agent.rotate()[0].serial_number
        wait_until(lambda: serial(certs / "svid.pem") == new, "rotation written while 200 clients idle")
        assert held(proc.pid, port) == 16
        assert len(os.listdir(f"/proc/{proc.pid}/fd")) < 64  # far from the limit of 128
        for sock in idle:
            sock.close()
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/live")[0] == 200, "probes answered again")
        assert b"Too many open files" not in (tmp_path / "sidecar.log").read_bytes()
    finally:
        for sock in idle:
            sock.close()
        proc.terminate()
        assert proc.wait(15) == 0
        log.close()


def test_sigterm_during_a_log_write_still_ends_a_one_shot_run(tmp_path: Path) -> None:
    """The interrupt raised by the SIGTERM handler was an Exception, which a logging handler swallows.

    A SIGTERM that landed while the one-shot run was writing a log line (as right after
    "waiting up to ..." under load) was lost: the run waited out its whole timeout.
    """
    from spiffe_bridge.sidecar.oneshot import OneShot

    text = f'agent_address = "unix://{tmp_path}/none.sock"\ncert_dir = "{tmp_path}/certs"\n'
    text += 'svid_file_name = "svid.pem"\nsvid_key_file_name = "key.pem"\nsvid_bundle_file_name = "b.pem"\n'
    text += 'daemon_mode = false\none_shot_timeout = "10s"\n'
    config = build(parse_text(text, "hcl"), environ={})
    plans, _ = plan.build(config, {})

    class SignalDuringFlush(logging.StreamHandler):  # type: ignore[type-arg]
        def flush(self) -> None:
            super().flush()
            if "waiting up to" in self.last:
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside emit()
                self.last = ""

        def emit(self, record: logging.LogRecord) -> None:
            self.last = record.getMessage()
            super().emit(record)

    handler = SignalDuringFlush(sys.stderr)
    handler.last = ""
    logger = logging.getLogger("spiffe_bridge.sidecar")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert OneShot(config, plans).run() == 128 + signal.SIGTERM
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
