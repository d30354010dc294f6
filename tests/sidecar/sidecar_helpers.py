"""Helpers for the sidecar tests: run the CLI as a subprocess and wait for observable events.

Nothing here sleeps to synchronise: tests poll with ``_support.wait.wait_until`` (a file
appears, an HTTP endpoint answers, a line shows up in a child's record) and
fails with a useful message when its deadline passes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEADLINE = 15.0

#: A child that records the signals it gets, one per line, to the file named by argv[1].
#: SIGTERM makes it exit with code 7 (so tests can see the exit code propagate).
RECORDER = textwrap.dedent(
    """
    import os, signal, sys
    out = open(sys.argv[1], "a", buffering=1)
    def handler(signum, frame):
        out.write("signal %s\\n" % signal.Signals(signum).name)
        if signum == signal.SIGTERM:
            sys.exit(int(os.environ.get("RECORDER_TERM_EXIT", "7")))
    for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT):
        signal.signal(s, handler)
    if len(sys.argv) > 2:
        open(sys.argv[2], "w").write(str(os.getpid()))
    out.write("started %d\\n" % os.getpid())
    check = os.environ.get("RECORDER_CHECK")
    if check:
        out.write("file %s\\n" % ("present" if os.path.exists(check) else "missing"))
    exit_now = os.environ.get("RECORDER_EXIT_NOW")
    if exit_now is not None:
        sys.exit(int(exit_now))
    while True:
        signal.pause()
    """
)


def free_port() -> int:
    """A TCP port that was free a moment ago (the sidecar binds it right after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_conf(directory: Path, text: str, name: str = "helper.conf") -> Path:
    """Write a config file (dedented) and return its path."""
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def recorder(directory: Path) -> Path:
    """Write the signal-recording child script and return its path."""
    path = directory / "recorder.py"
    path.write_text(RECORDER)
    return path


def lines(path: Path) -> list[str]:
    """The lines of a file, or [] if it does not exist yet."""
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def http_get(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET; (0, b"") when nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def health(url: str) -> tuple[int, dict[str, Any]]:
    """(status, parsed JSON) of a health endpoint."""
    code, body = http_get(url)
    return code, (json.loads(body) if body else {})


class Sidecar:
    """``python -m spiffe_bridge run ...`` as a subprocess; stderr goes to a log file."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = cwd / f"sidecar-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spiffe_bridge", "run", *args],
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def log(self) -> str:
        """Everything the sidecar printed so far."""
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        """Send a signal to the sidecar."""
        self.proc.send_signal(sig)

    def wait(self, timeout: float = DEADLINE) -> int:
        """Wait for exit and return the exit code (log shown on timeout)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"sidecar did not exit within {timeout}s; log:\n{self.log}") from None

    def stop(self) -> int:
        """SIGTERM and wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait()

    def close(self) -> None:
        """Kill if still running and close the log."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def sidecar(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Iterator[Sidecar]:
    """Run a sidecar for the duration of a ``with`` block."""
    proc = Sidecar(args, cwd, env)
    try:
        yield proc
    finally:
        proc.close()


def run_once(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = DEADLINE
) -> tuple[int, str]:
    """Run the sidecar to completion; (exit code, output)."""
    with sidecar(args, cwd, env) as proc:
        code = proc.wait(timeout)
        return code, proc.log


_SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? '
    r"(-?[0-9.eE+-]+|NaN|[+-]Inf)$"
)


def check_exposition(text: str) -> None:
    """Strict check of Prometheus text format 0.0.4.

    HELP and TYPE before a family's contiguous samples, one TYPE per family, summary suffixes
    only on summaries, valid names, escapes and values, no duplicate series.
    """
    assert text.endswith("\n"), "the page must end with a newline"
    types: dict[str, str] = {}
    seen: set[str] = set()
    current = ""
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current = line.split(" ", 3)[2]
            assert current not in types, f"HELP after TYPE or family repeated: {line}"
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and name not in types, f"TYPE without its HELP, or twice: {line}"
            assert kind in ("counter", "gauge", "summary", "histogram", "untyped"), line
            types[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a valid sample line: {line!r}"
        name = match.group(1)
        allowed = {current} | (
            {current + "_sum", current + "_count"} if types.get(current) == "summary" else set()
        )
        assert name in allowed, f"sample {name} outside its family {current}"
        float(match.group(3).replace("Inf", "inf"))
        key = name + (match.group(2) or "")
        assert key not in seen, f"duplicate sample {key}"
        seen.add(key)
