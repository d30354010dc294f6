"""Shared machinery: an instrumented dev agent, an event pipe from probes, subprocess handling.

Timing across processes uses ``time.monotonic()`` everywhere: on Linux it is
CLOCK_MONOTONIC, one clock for the whole machine, so a push timestamp taken
inside the agent and a callback timestamp taken in a probe process subtract
meaningfully. Probes report over a FIFO (one line per event, each write is
atomic below PIPE_BUF) so that no benchmark polls files and steals CPU from
the process it measures.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._env import REPO, probe_env
from spiffe_bridge.devagent import DevAgent, Rpc
from spiffe_bridge.devagent.calls import AgentCalls

PY = sys.executable
RECORDER = str(REPO / "benchmarks" / "_recorder.py")


@dataclass(frozen=True)
class Push:
    """One message the agent handed to gRPC: which RPC, which stream, when (monotonic)."""

    rpc: Rpc
    stream_id: int | None
    at: float


class _TimedCalls:
    """The agent's call interface with ``record_sent`` timestamped; everything else passes through."""

    def __init__(self, calls: AgentCalls, stamp: Callable[[Rpc, int | None], None]) -> None:
        self._calls = calls
        self._stamp = stamp

    def record_sent(self, rpc: Rpc, summary: str, stream_id: int | None = None) -> None:
        self._stamp(rpc, stream_id)
        self._calls.record_sent(rpc, summary, stream_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._calls, name)


class TimedAgent(DevAgent):
    """A DevAgent that timestamps every message right before it goes on the wire.

    A handler calls ``record_sent`` of the agent's call interface (``call_desk``) just
    before it yields the payload to gRPC, so ``pushes`` holds the moment the push
    happens (after the message was built), not the moment ``rotate()`` began
    issuing new keys.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pushes: list[Push] = []
        self._push_lock = threading.Lock()

    @property
    def call_desk(self) -> AgentCalls:
        """The interface the servicer uses, with every answer timestamped into ``pushes``."""
        return _TimedCalls(super().call_desk, self._stamp)

    def _stamp(self, rpc: Rpc, stream_id: int | None) -> None:
        at = time.monotonic()
        with self._push_lock:
            self.pushes.append(Push(rpc, stream_id, at))

    def __enter__(self) -> TimedAgent:
        """Start serving; typed as TimedAgent so ``with TimedAgent(...) as agent`` keeps ``pushes``."""
        super().__enter__()
        return self

    def mark(self) -> int:
        """A position in ``pushes``; pass it to :meth:`pushes_since`."""
        with self._push_lock:
            return len(self.pushes)

    def pushes_since(self, mark: int, rpc: Rpc = Rpc.FETCH_X509_SVID) -> list[Push]:
        """Pushes of ``rpc`` recorded after ``mark``."""
        with self._push_lock:
            return [p for p in self.pushes[mark:] if p.rpc is rpc]


def fsync_cost(directory: str) -> float:
    """Seconds one fsync of a new 1.5 KB file takes here now (the disk's share of a file-set write).

    On a shared ext4 volume an fsync commits the journal for everyone's pending
    metadata, so its cost swings by 10x with other processes' I/O; sampling it
    between rotations tells how much of a write's latency the disk set.
    """
    path = os.path.join(directory, f".fsync-probe-{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"x" * 1500)
        start = time.perf_counter()
        os.fsync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)


@dataclass
class Event:
    """A line a probe wrote: kind (``ready``, ``event``, ...), its fields, and when it was read."""

    kind: str
    fields: list[str]
    read_at: float

    @property
    def t(self) -> float:
        """The probe's own monotonic timestamp (first field)."""
        return float(self.fields[0])


class EventPipe:
    """A FIFO that probes write one-line events to, read by a background thread into a queue."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "events.fifo")
        os.mkfifo(self.path, 0o600)
        # O_RDWR: opening never blocks and the reader never sees EOF when a probe exits.
        self._fd = os.open(self.path, os.O_RDWR)
        self.events: queue.Queue[Event] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._read, name="bench-events", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        while not self._closed:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            now = time.monotonic()
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                parts = line.decode(errors="replace").split()
                if parts and parts[0] != "stop":
                    self.events.put(Event(parts[0], parts[1:], now))

    def get(self, kind: str | None = None, timeout: float = 20.0) -> Event:
        """The next event (of ``kind``, skipping others); TimeoutError naming what was awaited."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {kind or 'probe'} event within {timeout}s")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event.kind == "error":
                raise RuntimeError("probe failed: " + " ".join(event.fields))
            if kind is None or event.kind == kind:
                return event

    def drain(self) -> None:
        """Drop queued events (between blocks)."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.events.get_nowait()

    def close(self) -> None:
        """Stop the reader thread and close the FIFO (probes still writing get SIGPIPE and end)."""
        self._closed = True
        with contextlib.suppress(OSError):
            os.write(self._fd, b"stop\n")
        self._thread.join(2.0)
        with contextlib.suppress(OSError):
            os.close(self._fd)


@dataclass
class Proc:
    """A benchmark subprocess with its log file, stopped politely then firmly."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    children: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The process id (for /proc sampling)."""
        return self.popen.pid

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; also kill recorded children (reload recorders)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        for pid in self.children:  # a reload child the sidecar may have left behind
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the process's output, for error messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, argv: Sequence[str], workdir: str, cwd: str | None = None) -> Proc:
    """Start ``argv`` with stdout+stderr going to ``<workdir>/<name>.log``."""
    log = Path(workdir) / f"{name}.log"
    fh = open(log, "ab")  # noqa: SIM115 - the child owns it for its lifetime
    try:
        popen = subprocess.Popen(
            list(argv),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd or str(REPO),
            env=probe_env(),
        )
    finally:
        fh.close()
    return Proc(name, popen, log)


def probe_argv(mode: str, *args: str) -> list[str]:
    """Command line of a probe process (see benchmarks/_probe.py)."""
    return [PY, "-m", "benchmarks._probe", mode, *args]


@contextlib.contextmanager
def workdir(prefix: str = "spiffe-bridge-bench-") -> Iterator[str]:
    """A short temporary directory (Unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir="/tmp") as path:
        yield path


def helper_conf(
    path: Path, socket_path: str, cert_dir: Path, *, recorder_fifo: str | None, daemon: bool
) -> Path:
    """A spiffe-helper config file; the same text drives spiffe-helper and ``spiffe-bridge run``.

    With ``recorder_fifo`` the reload action is spiffe-helper's ``cmd`` +
    ``renew_signal``: a tiny recorder started after the first write and sent
    SIGUSR1 once every file of an update is on disk, which timestamps it.
    """
    lines = [
        f'agent_address = "{socket_path}"',
        f'cert_dir = "{cert_dir}"',
        'svid_file_name = "svid.pem"',
        'svid_key_file_name = "svid_key.pem"',
        'svid_bundle_file_name = "svid_bundle.pem"',
        f"daemon_mode = {'true' if daemon else 'false'}",
    ]
    if recorder_fifo:
        lines += [f'cmd = "{PY}"', f'cmd_args = "{RECORDER} {recorder_fifo}"', 'renew_signal = "SIGUSR1"']
    cert_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def sidecar_argv(conf: Path, daemon: bool = True) -> list[str]:
    """``spiffe-bridge run`` exactly as a user starts it (the console script's module)."""
    argv = [PY, "-m", "spiffe_bridge", "run", "-config", str(conf)]
    return argv if daemon else [*argv, "-daemon-mode=false"]


def wait_ready(pipe: EventPipe, proc: Proc, kind: str = "ready", timeout: float = 30.0) -> Event:
    """Wait for a probe's ready line; on failure include the probe's log in the error."""
    try:
        return pipe.get(kind, timeout)
    except (TimeoutError, RuntimeError) as exc:
        raise RuntimeError(f"{proc.name} did not become ready: {exc}\n{proc.log_tail()}") from None


@dataclass(frozen=True)
class Client:
    """A client under test: ``key`` names it in the JSON, ``kind`` says how it is started.

    kinds: ``probe`` (``mode`` of benchmarks/_probe.py), ``sidecar`` (``spiffe-bridge run``)
    and ``helper`` (spiffe-helper); the last two get the recorder as their reload action.
    """

    key: str
    label: str
    kind: str
    mode: str = ""


def start_client(
    client: Client, agent: DevAgent, pipe: EventPipe, wd: str, tag: str, helper: Path | None = None
) -> tuple[Proc, Event]:
    """Start ``client`` against ``agent``; return it once it holds (and, for sidecars, wrote) an update."""
    base = Path(wd) / tag
    if client.kind == "probe":
        extra = [str(base) + "-files"] if client.mode == "ours-files" else []
        proc = spawn(tag, probe_argv(client.mode, agent.socket_path, pipe.path, *extra), wd)
        return proc, wait_ready(pipe, proc)
    conf = helper_conf(
        Path(f"{base}.conf"), agent.socket_path, base / "certs", recorder_fifo=pipe.path, daemon=True
    )
    if client.kind == "sidecar":
        proc = spawn(tag, sidecar_argv(conf), wd)
    elif client.kind == "helper":
        if helper is None:
            raise RuntimeError("spiffe-helper binary missing")
        proc = spawn(tag, [str(helper), "-config", str(conf)], wd)
    else:
        raise ValueError(f"unknown client kind {client.kind!r}")
    started = wait_ready(pipe, proc, "start")
    proc.children.append(int(started.fields[1]))
    return proc, started


#: The clients compared in the rotation and recovery benchmarks, ours first.
ROTATION_CLIENTS: tuple[Client, ...] = (
    Client("ours_callback", "ours: X509Source subscriber callback (in memory)", "probe", "ours-callback"),
    Client("ours_files", "ours: X509Source + pem + FileSetWriter (on disk)", "probe", "ours-files"),
    Client("ours_sidecar", "ours: `spiffe-bridge run` (files + reload signal)", "sidecar"),
    Client(
        "pyspiffe_callback",
        "py-spiffe: X509Source subscriber callback (in memory)",
        "probe",
        "pyspiffe-callback",
    ),
    Client("spiffe_helper", "spiffe-helper: daemon (files + reload signal)", "helper"),
)
