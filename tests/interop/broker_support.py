"""A SPIRE deployment with the Broker API endpoint on, and workload processes under other uids.

The workloads run ``sleep`` (not Python: the interpreter lives under /root, which
other users cannot traverse) through ``setpriv``, so the agent's unix attestor
sees a process of that uid. The broker (this test process, uid 0) has two SVIDs:
``/node-bridge``, on the agent's allow-list, and ``/not-a-broker``, which is not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support.ci import require
from interop_support import wait_for
from spire import EntrySpec, SpireDeployment

BROKER_PATH = "/node-bridge"
NOT_A_BROKER_PATH = "/not-a-broker"
ENTRIES = (EntrySpec(BROKER_PATH, hint="broker"), EntrySpec(NOT_A_BROKER_PATH, hint="other"))


def _uid_of(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


class Workload:
    """A ``sleep`` process as ``uid`` (group ``gid``, default ``uid``); the broker references ``pid``."""

    def __init__(self, uid: int, gid: int | None = None) -> None:
        setpriv = shutil.which("setpriv")
        sleep = shutil.which("sleep")
        require(setpriv and sleep, "setpriv (util-linux) and sleep (coreutils) are needed")
        require(os.geteuid() == 0, "workloads under other uids need root (setpriv --reuid)")
        assert setpriv and sleep
        self.uid = uid
        self.gid = uid if gid is None else gid
        self.popen = subprocess.Popen(
            [
                setpriv,
                "--pdeathsig",
                "KILL",
                f"--reuid={uid}",
                f"--regid={self.gid}",
                "--clear-groups",
                sleep,
                "600",
            ],
            stdin=subprocess.DEVNULL,
        )
        # attest only after the exec: before it, the PID still belongs to root's setpriv
        wait_for(
            lambda: _uid_of(self.pid) == uid and os.readlink(f"/proc/{self.pid}/exe").endswith("sleep"),
            f"workload process under uid {uid}",
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)


@contextlib.contextmanager
def workload(uid: int, gid: int | None = None) -> Iterator[Workload]:
    w = Workload(uid, gid)
    try:
        yield w
    finally:
        w.stop()


def start_broker_deployment(bin_dir: Path, base: Path) -> SpireDeployment:
    d = SpireDeployment(bin_dir, base, entries=ENTRIES, federated_trust_domain=None, brokers=[BROKER_PATH])
    try:
        d.start()
    except BaseException:
        d.stop()
        raise
    return d


@pytest.fixture(scope="module")
def broker_spire(spire_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpireDeployment]:
    d = start_broker_deployment(spire_bin_dir, tmp_path_factory.mktemp("spire-broker"))
    try:
        yield d
    finally:
        d.stop()
