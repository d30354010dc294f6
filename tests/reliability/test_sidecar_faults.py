"""The sidecar daemon under agent faults: restarts, a silent agent, its output directory removed.

A reader thread checks the files continuously while the agent restarts: they are never
missing, never torn, and identical re-deliveries cause no rewrite and no reload.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from reliability_support import pem_set_problems, scale
from sidecar_support import PEM_FILES, FileWatcher, Published, read_or_none, running, sidecar_config

from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.fileset import read_current
from spiffe_bridge.sidecar.runner import Daemon
from spiffe_bridge.sources.state import SourceStatus

NAMES = ["svid.pem", "svid_key.pem", "svid_bundle.pem"]
RELOAD = 'reload_command = ["/bin/true"]\n'


def _ready_after_reconnect(daemon: Daemon, reconnects: int) -> bool:
    source = daemon.x509_source
    return (
        source is not None and source.state.reconnects >= reconnects and source.status is SourceStatus.READY
    )


@pytest.mark.parametrize("layout", ["symlink", "flat"])
def test_agent_restarted_many_times_under_the_sidecar(
    dev_agent: DevAgent, tmp_path: Path, layout: str
) -> None:
    restarts = scale(50, 500) if layout == "symlink" else scale(10, 100)
    certs = tmp_path / "certs"
    config = sidecar_config(dev_agent, PEM_FILES.format(dir=certs) + RELOAD + f'layout = "{layout}"\n')
    with running(config) as (daemon, published):
        published.wait(lambda: daemon.status.snapshot()["reloads"] == 1, "first write and reload")
        writes = published.count
        with FileWatcher(certs, layout) as watcher:
            watcher.wait_reads(1)
            for i in range(restarts):
                opened = dev_agent.streams_opened("FetchX509SVID")
                dev_agent.restart()
                dev_agent.wait_for_streams_opened("FetchX509SVID", opened + 1, timeout=15)
                dev_agent.wait_for_messages("FetchX509SVID", i + 2, timeout=15)
                assert daemon.x509_source is not None
                daemon.x509_source.state.wait(lambda c, n=i + 1: _ready_after_reconnect(daemon, n), 15)
                watcher.wait_reads(1)  # a read after this recovery
            # identical re-deliveries: nothing rewritten, nothing reloaded
            snapshot = daemon.status.snapshot()
            assert published.count == writes and snapshot["reloads"] == 1
            assert snapshot["rotations"]["x509"] == 1
            assert len(watcher.sets) == 1
            # a real rotation after all that: one write, one reload
            serial = dev_agent.rotate()[0].serial_number
            published.wait(lambda: daemon.status.snapshot()["reloads"] == 2, "reload after rotation")
            watcher.wait_reads(1)
            assert watcher.problems == []
            if layout == "symlink":
                assert len(watcher.sets) == 2 and watcher.mixed_sets == 0
            print(f"\n{layout}: {watcher.reads} reads, {watcher.mixed_sets} transient mixed cert/key sets")
        leaf = read_or_none(certs / "svid.pem")
        assert leaf is not None and _serial(leaf) == serial
        assert daemon.status.ready()


def _serial(pem: bytes | None) -> int | None:
    return x509.load_pem_x509_certificates(pem)[0].serial_number if pem else None


def _health(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def test_silent_agent_keeps_the_sidecar_not_ready(dev_agent: DevAgent, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    certs = tmp_path / "certs"
    text = (
        PEM_FILES.format(dir=certs) + f"health_checks {{\n listener_enabled = true\n bind_port = {port}\n}}\n"
    )
    dev_agent.hang("FetchX509SVID")
    with running(sidecar_config(dev_agent, text)) as (daemon, published):
        dev_agent.wait_for_streams(1, rpc="FetchX509SVID")
        code, body = _health(port, "/ready")
        assert code == 503 and body["health"]["streams"]["x509"]["status"] == "starting"
        assert _health(port, "/live")[0] == 200  # waiting for the agent is not a failure
        assert not certs.exists() or list(certs.iterdir()) == []
        dev_agent.hang("FetchX509SVID", False)
        published.wait(daemon.status.ready, "ready once the agent answers")
        assert _health(port, "/ready")[0] == 200


def test_output_directory_removed_under_the_sidecar(dev_agent: DevAgent, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    config = sidecar_config(dev_agent, PEM_FILES.format(dir=certs) + RELOAD)
    with running(config) as (daemon, published):
        published.wait(lambda: daemon.status.snapshot()["reloads"] == 1, "first write")
        shutil.rmtree(certs)
        serial = dev_agent.rotate()[0].serial_number
        published.wait(lambda: daemon.status.snapshot()["reloads"] == 2, "rewrite after rotation")
        got = read_current(certs, NAMES)
        assert pem_set_problems(got["svid.pem"], got["svid_key.pem"], got["svid_bundle.pem"]) == []
        assert _serial(got["svid.pem"]) == serial
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("sidecar")) == ["certs"]
        assert daemon.status.ready()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs (needs root and mount; skipped otherwise)."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)]).returncode:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)]).returncode:
            subprocess.run(["umount", "-l", str(mount_point)])


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


@contextlib.contextmanager
def disk_full_after_rotation(agent: DevAgent, fs: Path) -> Iterator[tuple[Daemon, Published, Path, int]]:
    """The sidecar's write of a rotation failed on a full disk; then space was freed again."""
    certs = fs / "certs"
    config = sidecar_config(agent, PEM_FILES.format(dir=certs) + RELOAD + 'layout = "symlink"\n')
    with running(config) as (daemon, published):
        published.wait(lambda: daemon.status.snapshot()["reloads"] == 1, "first write")
        old = agent.svids[0].serial_number
        filler = _fill(fs)
        new = agent.rotate()[0].serial_number
        published.wait(lambda: daemon.status.write_failures >= 1, "the failed write")
        got = read_current(certs, NAMES)
        assert pem_set_problems(*(got[n] for n in NAMES)) == []
        assert _serial(got["svid.pem"]) == old, "the previous set must stay in place"
        assert not daemon.status.ready()
        assert daemon.status.snapshot()["reloads"] == 1, "no reload for a set that was not written"
        filler.unlink()
        yield daemon, published, certs, new


def test_full_disk_keeps_the_previous_files_and_recovers(dev_agent: DevAgent, small_fs: Path) -> None:
    with disk_full_after_rotation(dev_agent, small_fs) as (daemon, published, certs, _new):
        newest = dev_agent.rotate()[0].serial_number
        published.wait(lambda: daemon.status.snapshot()["reloads"] == 2, "recovery and its reload")
        assert _serial(read_or_none(certs / "svid.pem")) == newest
        assert daemon.status.ready()


def test_failed_write_is_retried_without_a_new_update(dev_agent: DevAgent, small_fs: Path) -> None:
    with disk_full_after_rotation(dev_agent, small_fs) as (daemon, published, certs, new):
        published.wait(lambda: _serial(read_or_none(certs / "svid.pem")) == new, "a retried write", 5)
        assert daemon.status.ready()
