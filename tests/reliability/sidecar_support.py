"""Running the sidecar daemon in-process for reliability tests, with event-based waits."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.sidecar import plan
from spiffe_bridge.sidecar.config import Config, build, parse_text
from spiffe_bridge.sidecar.runner import Daemon

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
        original = daemon._publish

        def publish(kind: str, paths: list[str]) -> None:
            original(kind, paths)
            with self.cond:
                self.count += 1
                self.cond.notify_all()

        daemon._publish = publish  # type: ignore[method-assign]

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
        with self.cond:
            assert self.cond.wait_for(condition, timeout), f"timed out waiting for {what}"


@contextlib.contextmanager
def running(config: Config) -> Iterator[tuple[Daemon, Published]]:
    plans, _ = plan.build(config, {})
    daemon = Daemon(config, plans)
    published = Published(daemon)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run()), daemon=True)
    thread.start()
    try:
        yield daemon, published
    finally:
        daemon.request_stop()
        thread.join(10)
    assert codes == [0]


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
