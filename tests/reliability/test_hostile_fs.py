"""Hostile filesystem around FileSetWriter: the directory replaced while running, links planted
between two writes, permission denied. The previous set stays intact, the error is clear, and
nothing is written outside the configured directory (checked by listing the parent and an
outside target before and after).

tests/writers covers the rest (full filesystem, read-only directory, a write failing part-way,
links planted at visible names before a write); this file does not repeat those.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import shutil
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _support.ci import needs
from _support.pki import svid_message
from cryptography import x509
from reliability_support import pem_set_problems, pem_specs
from sidecar_support import PEM_FILES, running, sidecar_config

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.client import decode_x509_context
from spiffe_bridge.devagent.ca import TrustDomainCA
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.fileset import (
    DATA_LINK,
    MANIFEST,
    FileSetWriter,
    FileSpec,
    WriteError,
    current_version_dir,
    read_current,
)
from spiffe_bridge.sidecar import plan
from spiffe_bridge.sidecar.exitcodes import EXIT_OK
from spiffe_bridge.sidecar.oneshot import OneShot
from spiffe_bridge.x509context import X509Context

LAYOUTS = ("symlink", "flat")
NAMES = ("svid.pem", "svid_key.pem", "svid_bundle.pem")


@functools.cache
def _contexts() -> tuple[X509Context, ...]:
    ca = TrustDomainCA("example.org", intermediate=True)
    return tuple(
        decode_x509_context(pb.X509SVIDResponse(svids=[svid_message(ca, "spiffe://example.org/web")]))
        for _ in range(3)
    )


def material(n: int) -> list[FileSpec]:
    return pem_specs(_contexts()[n])


def tree(path: Path) -> dict[str, tuple[int, str]]:
    """Every entry under ``path`` (not following links): mode and content hash or link target."""
    out: dict[str, tuple[int, str]] = {}
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            full = Path(dirpath, name)
            st = full.lstat()
            rel = str(full.relative_to(path))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = (st.st_mode, os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = (st.st_mode, hashlib.sha256(full.read_bytes()).hexdigest())
            else:
                out[rel] = (st.st_mode, "")
    return out


def read_set(directory: Path) -> dict[str, bytes]:
    if (directory / DATA_LINK).is_symlink():
        return read_current(directory, NAMES)
    return {n: (directory / n).read_bytes() for n in NAMES}


def assert_complete(directory: Path, n: int) -> None:
    """``directory`` holds exactly material ``n``, coherent, key 0600."""
    got = read_set(directory)
    assert got == {s.name: s.data for s in material(n)}
    assert pem_set_problems(got["svid.pem"], got["svid_key.pem"], got["svid_bundle.pem"]) == []
    assert stat.S_IMODE(os.stat(directory / "svid_key.pem").st_mode) == 0o600


@dataclass
class Scene:
    """``base/certs`` is the configured directory; ``outside`` is what must never change."""

    base: Path
    out: Path
    outside: Path
    target: Path

    def writer(self, layout: str) -> FileSetWriter:
        return FileSetWriter(self.out, layout=layout)  # type: ignore[arg-type]

    def snapshot(self) -> tuple[list[str], dict[str, tuple[int, str]]]:
        return sorted(os.listdir(self.base)), tree(self.outside)


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    base = tmp_path / "base"
    base.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "precious"
    target.write_bytes(b"do not overwrite")
    os.chmod(target, 0o644)
    yield Scene(base, base / "certs", outside, target)


# -- the output directory replaced while running --------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_output_directory_removed_while_running(scene: Scene, layout: str) -> None:
    writer = scene.writer(layout)
    writer.write(material(0))
    shutil.rmtree(scene.out)
    before = scene.snapshot()
    assert writer.write(material(1)).changed
    assert_complete(scene.out, 1)
    assert scene.snapshot() == (before[0] + ["certs"], before[1])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_output_directory_swapped_for_an_empty_one(scene: Scene, layout: str) -> None:
    writer = scene.writer(layout)
    writer.write(material(0))
    old = scene.base / "certs.old"
    os.rename(scene.out, old)
    old_tree = tree(old)
    scene.out.mkdir()
    assert writer.write(material(1)).changed
    assert_complete(scene.out, 1)
    assert tree(old) == old_tree, "the moved-away directory must not be touched"
    assert_complete(old, 0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_output_directory_swapped_for_one_with_planted_links(scene: Scene, layout: str) -> None:
    writer = scene.writer(layout)
    writer.write(material(0))
    os.rename(scene.out, scene.base / "certs.old")
    scene.out.mkdir()
    os.symlink(scene.target, scene.out / "svid_key.pem")
    before = scene.snapshot()
    assert writer.write(material(1)).changed  # the link is replaced, never written through
    assert_complete(scene.out, 1)
    assert writer.links_replaced == 1
    assert scene.snapshot() == before
    assert scene.target.read_bytes() == b"do not overwrite"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_output_directory_swapped_for_a_symlink(scene: Scene, layout: str) -> None:
    writer = scene.writer(layout)
    writer.write(material(0))
    os.rename(scene.out, scene.base / "certs.old")
    os.symlink(scene.outside, scene.out)
    before = scene.snapshot()
    try:
        writer.write(material(1))
        refused = False
    except WriteError:
        refused = True
    assert scene.snapshot() == before, "key material was written outside the configured directory"
    assert refused


@pytest.mark.parametrize("layout", LAYOUTS)
def test_configured_directory_that_is_a_symlink_from_the_start_works(scene: Scene, layout: str) -> None:
    """The legitimate case the fix for the swapped-directory bug must keep working."""
    real = scene.base / "real-certs"
    real.mkdir()
    os.symlink(real, scene.out)
    writer = scene.writer(layout)
    writer.write(material(0))
    writer.write(material(1))
    assert_complete(scene.out, 1)
    assert scene.target.read_bytes() == b"do not overwrite"


# -- links planted between two writes ---------------------------------------------------------


def test_symlink_planted_inside_the_current_version(scene: Scene) -> None:
    """A link inside ``..data`` is never written through; the next write makes a fresh version."""
    writer = scene.writer("symlink")
    writer.write(material(0))
    version = current_version_dir(scene.out)
    assert version is not None
    os.unlink(version / "svid_key.pem")
    os.symlink(scene.target, version / "svid_key.pem")
    before_outside = tree(scene.outside)
    # Same material: the writer must notice the key is no longer its file and repair the set.
    assert writer.write(material(0)).changed
    assert current_version_dir(scene.out) != version
    assert_complete(scene.out, 0)
    assert tree(scene.outside) == before_outside
    assert writer.write(material(1)).changed
    assert_complete(scene.out, 1)
    assert tree(scene.outside) == before_outside


def test_data_link_pointed_outside(scene: Scene) -> None:
    writer = scene.writer("symlink")
    writer.write(material(0))
    tmp = scene.out / "..data.evil"
    os.symlink(scene.outside, tmp)
    os.replace(tmp, scene.out / DATA_LINK)
    before = scene.snapshot()
    with pytest.raises(WriteError, match="not a version dir"):
        writer.write(material(1))
    assert scene.snapshot() == before


def test_version_named_symlink_to_outside_is_never_followed(scene: Scene) -> None:
    """A symlink named like a version directory (what ``..data`` may point at, what pruning deletes)."""
    writer = scene.writer("symlink")
    writer.write(material(0))
    (scene.outside / "victim-dir").mkdir()
    (scene.outside / "victim-dir" / "keep").write_bytes(b"keep me")
    fake = "..2000_01_01_00_00_00.000000000_deadbeef"
    os.symlink(scene.outside / "victim-dir", scene.out / fake)
    tmp = scene.out / "..data.evil"
    os.symlink(fake, tmp)
    os.replace(tmp, scene.out / DATA_LINK)
    before_outside = tree(scene.outside)
    for n in (1, 2, 0):  # several writes: each prunes old versions
        writer.write(material(n))
        assert_complete(scene.out, n)
        assert tree(scene.outside) == before_outside


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fifo_planted_at_a_visible_name_is_replaced(
    scene: Scene, layout: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A FIFO at a visible name used to be refused on every write: a permanent outage.

    The rename replaces it without opening it (an open would block), like a planted link.
    """
    writer = scene.writer(layout)
    writer.write(material(0))
    key = scene.out / "svid_key.pem"
    os.unlink(key)
    os.mkfifo(key)
    with caplog.at_level(logging.WARNING, logger="spiffe_bridge.fileset"):
        writer.write(material(1))
    assert_complete(scene.out, 1)
    assert not stat.S_ISFIFO(os.stat(key).st_mode)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert writer.links_replaced == 1
    assert [r.getMessage() for r in caplog.records if "FIFO" in r.getMessage()] == [
        f"replaced a FIFO at {key} that spiffe-bridge did not create; it was neither followed nor opened"
    ]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_directory_planted_at_a_visible_name_is_refused(scene: Scene, layout: str) -> None:
    """A directory may hold someone's data: the write is refused and the other files stay as they were."""
    writer = scene.writer(layout)
    writer.write(material(0))
    key = scene.out / "svid_key.pem"
    os.unlink(key)
    key.mkdir()
    with pytest.raises(WriteError, match=r"directory is in the way") as info:
        writer.write(material(1))
    assert info.value.path == str(key)
    assert (scene.out / "svid.pem").read_bytes() == material(0)[0].data


# -- attack run (issue #14): state planted in the output directory ------------------------------
#
# Whoever can write the output directory (a shared emptyDir) must not be able to make the writer,
# usually root, delete, write or chmod anything outside it, nor stop it from writing.


def _plant_escape(scene: Scene) -> Path:
    """Links out of the output directory and a manifest naming files behind them."""
    victim = scene.outside / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "secret.txt").write_bytes(b"secret")
    (victim / "sub" / "f").write_bytes(b"f")
    scene.out.mkdir(exist_ok=True)
    os.symlink(victim, scene.out / "x")
    (scene.out / "real").mkdir()
    os.symlink(victim, scene.out / "real" / "y")
    names = ["x/secret.txt", "x/sub/f", "x/sub", "real/y/secret.txt", "real/y/sub/f"]
    (scene.out / MANIFEST).write_text(json.dumps(names))
    return victim


@pytest.mark.parametrize("action", ["write", "remove"])
@pytest.mark.parametrize("when", ["before-first-write", "between-writes"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_planted_manifest_cannot_delete_outside(scene: Scene, layout: str, when: str, action: str) -> None:
    """Issue #14 item 1: a manifest listing ``x/secret.txt`` plus ``x -> /victim`` used to unlink
    ``/victim/secret.txt`` (and rmdir ``/victim/sub``) on the next write or remove()."""
    writer = scene.writer(layout)
    if when == "between-writes":
        writer.write(material(0))
    _plant_escape(scene)
    before = tree(scene.outside)
    if action == "write":
        assert writer.write(material(1)).changed
        assert_complete(scene.out, 1)
    else:
        writer.remove()
        assert not os.path.lexists(scene.out / "svid_key.pem")
    assert tree(scene.outside) == before
    writer.remove()
    assert tree(scene.outside) == before


@pytest.mark.parametrize("layout", LAYOUTS)
def test_planted_manifest_still_cannot_delete_outside_after_flat_files(scene: Scene, layout: str) -> None:
    """The same through a real subdirectory the flat layout wrote (``federated/``) swapped for a link."""
    victim = scene.outside / "victim"
    victim.mkdir()
    (victim / "partner.test.pem").write_bytes(b"not ours")
    flat = FileSetWriter(scene.out, layout="flat")
    flat.write([*material(0), FileSpec("federated/partner.test.pem", b"partner\n", 0o644)])
    shutil.rmtree(scene.out / "federated")
    os.symlink(victim, scene.out / "federated")
    before = tree(scene.outside)
    # The manifest is genuine here (flat: the last write; symlink: taking over a flat directory).
    assert scene.writer(layout).write(material(1)).changed
    assert_complete(scene.out, 1)
    assert tree(scene.outside) == before


@pytest.mark.parametrize("same", [False, True], ids=["new-material", "same-material"])
@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_link_planted_at_a_visible_name_is_replaced(
    scene: Scene, layout: str, name: str, kind: str, same: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue #14 item 5: a planted link used to be refused on every write (a permanent outage).
    rename(2) over it replaces the link and follows nothing: replace it, warn, count it."""
    writer = scene.writer(layout)
    writer.write(material(0))
    path = scene.out / name
    os.unlink(path)
    if kind == "symlink":
        os.symlink(scene.target, path)
    else:
        os.link(scene.target, path)
    before = tree(scene.outside)
    n = 0 if same else 1
    with caplog.at_level(logging.WARNING, logger="spiffe_bridge.fileset"):
        assert writer.write(material(n)).changed
    assert_complete(scene.out, n)
    assert tree(scene.outside) == before
    assert scene.target.read_bytes() == b"do not overwrite"
    assert stat.S_IMODE(scene.target.stat().st_mode) == 0o644
    assert writer.links_replaced == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(path) in warnings[0]
    assert (str(scene.target) if kind == "symlink" else "2 hard links") in warnings[0]
    assert not writer.write(material(n)).changed, "the replaced link must not come back"
    assert writer.links_replaced == 1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_link_planted_under_the_daemon_is_replaced_and_counted(
    dev_agent: DevAgent, tmp_path: Path, layout: str
) -> None:
    """Item 5 end to end: the daemon used to fail every write after this (retrying forever)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    certs = tmp_path / "certs"
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not overwrite")
    text = (
        PEM_FILES.format(dir=certs)
        + f'reload_command = ["/bin/true"]\nlayout = "{layout}"\n'
        + f"health_checks {{\n bind_port = {port}\n}}\nmetrics {{ enabled = true }}\n"
    )
    with running(sidecar_config(dev_agent, text)) as (daemon, published):
        published.wait(lambda: daemon.status.snapshot()["reloads"] == 1, "first write")
        os.unlink(certs / "svid_key.pem")
        os.symlink(victim, certs / "svid_key.pem")
        serial = dev_agent.rotate()[0].serial_number
        published.wait(lambda: daemon.status.snapshot()["reloads"] == 2, "the rotation written")
        got = read_set(certs)
        assert pem_set_problems(got["svid.pem"], got["svid_key.pem"], got["svid_bundle.pem"]) == []
        assert x509.load_pem_x509_certificate(got["svid.pem"]).serial_number == serial
        assert victim.read_bytes() == b"do not overwrite"
        assert daemon.status.write_failures == 0 and daemon.status.ready()
        assert daemon.metrics is not None
        assert "spiffe_bridge_links_replaced_total 1.0" in daemon.metrics()[0].decode()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_link_planted_before_a_one_shot_run_is_replaced(
    dev_agent: DevAgent, tmp_path: Path, layout: str
) -> None:
    """Item 5 for one-shot mode, which used to exit 5 ("remove it") on every run."""
    certs = tmp_path / "certs"
    certs.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not overwrite")
    os.symlink(victim, certs / "svid.pem")
    config = sidecar_config(dev_agent, PEM_FILES.format(dir=certs) + f'layout = "{layout}"\n')
    plans, _ = plan.build(config, {})
    assert OneShot(config, plans).run() == EXIT_OK
    got = read_set(certs)
    assert pem_set_problems(got["svid.pem"], got["svid_key.pem"], got["svid_bundle.pem"]) == []
    assert victim.read_bytes() == b"do not overwrite"


# -- permission denied ------------------------------------------------------------------------


def _write_as_nobody(directory: Path, layout: str, files: list[FileSpec]) -> dict[str, object]:
    """Run one write in a forked child that dropped root (root ignores permission bits)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no Python-level cleanup, no pytest machinery
        result: dict[str, object]
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            FileSetWriter(directory, layout=layout).write(files)  # type: ignore[arg-type]
            result = {"ok": True}
        except WriteError as exc:
            result = {"errno": exc.errno, "path": exc.path, "message": str(exc)}
        except BaseException as exc:
            result = {"unexpected": repr(exc)}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    try:
        data = b""
        while chunk := os.read(read_end, 65536):
            data += chunk
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return dict(json.loads(data))


@needs(os.geteuid() == 0, "needs root to drop to another user")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_permission_denied(scene: Scene, layout: str) -> None:
    writer = scene.writer(layout)
    writer.write(material(0))
    os.chmod(scene.out, 0o755)  # root's; nobody may not create entries
    before = tree(scene.out)
    result = _write_as_nobody(scene.out, layout, material(1))
    assert result.get("errno") == errno.EACCES, result
    message = str(result["message"])
    assert message.startswith(f"cannot write {scene.out}") and "EACCES" in message
    assert tree(scene.out) == before
    assert_complete(scene.out, 0)
