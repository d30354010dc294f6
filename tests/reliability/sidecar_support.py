"""Running the sidecar daemon in-process for reliability tests, with event-based waits."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from _support.daemon import in_process
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from reliability_support import pem_set_problems

from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.fileset import read_current
from spiffe_bridge.sidecar import plan
from spiffe_bridge.sidecar.config import Config, build, parse_text
from spiffe_bridge.sidecar.runner import Daemon

NAMES = ["svid.pem", "svid_key.pem", "svid_bundle.pem"]
PEM_FILES = """
cert_dir = "{dir}"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
"""


def sidecar_config(agent: DevAgent, text: str) -> Config:
    return build(parse_text(f'agent_address = "{agent.address}"\n{text}', "hcl"), environ={})


class Published:
    """Wraps a Daemon's publish step so tests wait on "files written" events, not the clock."""

    def __init__(self, daemon: Daemon) -> None:
        self.cond = threading.Condition()
        self.count = 0
        original = daemon.publisher.publish

        async def publish(kind: str, paths: list[str]) -> None:
            await original(kind, paths)
            with self.cond:
                self.count += 1
                self.cond.notify_all()

        daemon.publisher.publish = publish  # type: ignore[method-assign]

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
        with self.cond:
            assert self.cond.wait_for(condition, timeout), f"timed out waiting for {what}"


@contextlib.contextmanager
def running(config: Config) -> Iterator[tuple[Daemon, Published]]:
    plans, _ = plan.build(config, {})
    daemon = Daemon(config, plans)
    published = Published(daemon)
    with in_process(daemon=daemon):
        yield daemon, published


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class FileWatcher:
    """Reads the credential set in a loop; records every distinct set and every problem."""

    def __init__(self, directory: Path, layout: str) -> None:
        self.directory = directory
        self.layout = layout
        self.sets: list[bytes] = []
        self.problems: list[str] = []
        self.reads = 0
        self.mixed_sets = 0  # distinct mixed cert/key sets seen (flat layout only)
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FileWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        verdicts: dict[bytes, list[str]] = {}
        while not self._stop.is_set():
            try:
                got = read_current(self.directory, NAMES, attempts=1)
            except FileNotFoundError as exc:
                with self.cond:
                    self.problems.append(f"file missing: {exc.filename}")
                continue
            digest = hashlib.sha256(b"\0".join(got[n] for n in NAMES)).digest()
            if digest not in verdicts:
                verdicts[digest] = self._check(got)
            with self.cond:
                self.reads += 1
                self.problems += verdicts[digest]
                if not self.sets or self.sets[-1] != digest:
                    self.sets.append(digest)
                self.cond.notify_all()

    def _check(self, got: dict[str, bytes]) -> list[str]:
        if self.layout == "symlink":  # one pinned version: the set must be coherent
            return pem_set_problems(*(got[n] for n in NAMES))
        # flat: files switch one by one (documented), so only each file must be whole;
        # a new certificate read with the old key is counted, not a failure
        try:
            x509.load_pem_x509_certificates(got["svid.pem"])
            x509.load_pem_x509_certificates(got["svid_bundle.pem"])
            serialization.load_pem_private_key(got["svid_key.pem"], None)
        except ValueError as exc:
            return [f"corrupt file: {exc}"]
        if pem_set_problems(*(got[n] for n in NAMES)):
            self.mixed_sets += 1
        return []

    def wait_reads(self, n: int, timeout: float = 10) -> None:
        with self.cond:
            target = self.reads + n
            assert self.cond.wait_for(lambda: self.reads >= target, timeout)
