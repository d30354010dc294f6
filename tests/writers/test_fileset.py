"""FileSetWriter: layouts, no-op rewrites, modes, planted links, stale files, pruning, removal."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support.ci import needs

from spiffe_bridge.errors import SpiffeBridgeError
from spiffe_bridge.fileset import (
    DATA_LINK,
    MANIFEST,
    FileSetWriter,
    FileSpec,
    WriteError,
    current_version_dir,
    iter_versions,
    read_current,
)

LAYOUTS = ("symlink", "flat")


def creds(n: int = 1, *, extra: bool = False) -> list[FileSpec]:
    files = [
        FileSpec("svid.pem", f"cert {n}\n".encode(), 0o644),
        FileSpec("svid_key.pem", f"key {n}\n".encode(), 0o600),
        FileSpec("svid_bundle.pem", b"bundle\n", 0o644),
    ]
    if extra:
        files.append(FileSpec("federated/partner.test.pem", b"partner\n", 0o644))
    return files


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def visible(directory: Path) -> set[str]:
    return {e for e in os.listdir(directory) if not e.startswith(".")}


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_filespec_repr_hides_content_and_names_are_checked() -> None:
    spec = FileSpec("svid_key.pem", b"SECRET-KEY-BYTES", 0o600)
    assert "SECRET" not in repr(spec)
    for bad in ("", "/etc/passwd", "../x", "a/../b", "..data", ".hidden", "a//b", "a/"):
        with pytest.raises(ValueError):
            FileSpec(bad, b"x")
    with pytest.raises(ValueError):
        FileSpec("x", b"x", 0o4755)


def test_write_error_is_a_spiffe_bridge_error_and_an_oserror() -> None:
    err = WriteError("/d/svid.pem", "No space left on device [ENOSPC]", 28)
    assert isinstance(err, SpiffeBridgeError) and isinstance(err, OSError)
    assert err.errno == 28 and err.path == "/d/svid.pem"
    assert str(err) == "cannot write /d/svid.pem: No space left on device [ENOSPC]"


def test_symlink_layout_switches_through_data_link(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = FileSetWriter(out).write(creds(1, extra=True))
    assert result.changed
    assert set(result.written) == {str(out / f.name) for f in creds(1, extra=True)}
    version = current_version_dir(out)
    assert version is not None and version.is_dir()
    assert os.readlink(out / DATA_LINK) == version.name
    for name in ("svid.pem", "svid_key.pem", "svid_bundle.pem", "federated"):
        assert os.readlink(out / name) == f"{DATA_LINK}/{name}"
    assert (out / "svid.pem").read_bytes() == b"cert 1\n"
    assert (out / "federated" / "partner.test.pem").read_bytes() == b"partner\n"
    assert mode_of(version / "svid_key.pem") == 0o600
    assert mode_of(version / "svid.pem") == 0o644
    assert mode_of(version) == 0o755
    assert visible(out) == {"svid.pem", "svid_key.pem", "svid_bundle.pem", "federated"}


def test_flat_layout_writes_plain_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    FileSetWriter(out, layout="flat").write(creds(1, extra=True))
    for f in creds(1, extra=True):
        path = out / f.name
        assert not path.is_symlink() and path.read_bytes() == f.data and mode_of(path) == f.mode
    assert not (out / DATA_LINK).exists()
    assert visible(out) == {"svid.pem", "svid_key.pem", "svid_bundle.pem", "federated"}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unchanged_material_is_not_rewritten(tmp_path: Path, layout: str) -> None:
    writer = FileSetWriter(tmp_path, layout=layout)  # type: ignore[arg-type]
    writer.write(creds(1))
    before = {f.name: os.stat(tmp_path / f.name) for f in creds(1)}
    versions = list(iter_versions(tmp_path))
    result = FileSetWriter(tmp_path, layout=layout).write(creds(1))  # type: ignore[arg-type]
    assert result.changed is False and result.written == ()
    after = {f.name: os.stat(tmp_path / f.name) for f in creds(1)}
    assert {n: (s.st_ino, s.st_mtime_ns) for n, s in before.items()} == {
        n: (s.st_ino, s.st_mtime_ns) for n, s in after.items()
    }
    assert list(iter_versions(tmp_path)) == versions


@pytest.mark.parametrize("layout", LAYOUTS)
def test_written_lists_only_changed_files(tmp_path: Path, layout: str) -> None:
    writer = FileSetWriter(tmp_path, layout=layout)  # type: ignore[arg-type]
    writer.write(creds(1))
    result = writer.write(creds(2))
    assert result.changed
    assert set(result.written) == {str(tmp_path / "svid.pem"), str(tmp_path / "svid_key.pem")}
    assert (tmp_path / "svid_key.pem").read_bytes() == b"key 2\n"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mask", [0o000, 0o077, 0o277])
def test_modes_ignore_umask(tmp_path: Path, layout: str, mask: int, umask: None) -> None:
    os.umask(mask)
    FileSetWriter(tmp_path / "out", layout=layout).write(creds(1, extra=True))  # type: ignore[arg-type]
    os.umask(0o022)
    assert mode_of(tmp_path / "out" / "svid_key.pem") == 0o600
    assert mode_of(tmp_path / "out" / "svid.pem") == 0o644
    assert mode_of(tmp_path / "out" / "federated" / "partner.test.pem") == 0o644


@pytest.mark.parametrize("layout", LAYOUTS)
def test_mode_is_reapplied_when_someone_loosened_it(tmp_path: Path, layout: str) -> None:
    writer = FileSetWriter(tmp_path, layout=layout)  # type: ignore[arg-type]
    writer.write(creds(1))
    os.chmod(tmp_path / "svid_key.pem", 0o644)  # through the link in the symlink layout
    result = writer.write(creds(1))
    assert result.changed and result.written == (str(tmp_path / "svid_key.pem"),)
    assert mode_of(tmp_path / "svid_key.pem") == 0o600


@needs(os.geteuid() == 0, "chown to another user needs root")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_owner_is_set_before_files_become_visible(tmp_path: Path, layout: str) -> None:
    writer = FileSetWriter(tmp_path, layout=layout, uid=65534, gid=65534)  # type: ignore[arg-type]
    writer.write(creds(1))
    st = os.stat(tmp_path / "svid_key.pem")
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert writer.write(creds(1)).changed is False


def test_symlink_layout_replaces_a_planted_symlink(tmp_path: Path) -> None:
    """Replaced by rename (never written through); refusing it was a permanent outage (#14)."""
    out = tmp_path / "out"
    writer = FileSetWriter(out)
    writer.write(creds(1))
    version = current_version_dir(out)
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not touch")
    os.chmod(victim, 0o644)
    os.unlink(out / "svid_key.pem")
    os.symlink(victim, out / "svid_key.pem")
    assert writer.write(creds(2)).changed
    assert victim.read_bytes() == b"do not touch" and mode_of(victim) == 0o644
    assert current_version_dir(out) != version
    assert os.readlink(out / "svid_key.pem") == f"{DATA_LINK}/svid_key.pem"
    assert (out / "svid_key.pem").read_bytes() == b"key 2\n" and mode_of(out / "svid_key.pem") == 0o600
    assert (out / "svid.pem").read_bytes() == b"cert 2\n"
    assert writer.links_replaced == 1


@pytest.mark.parametrize("name", ["svid_key.pem", "federated/partner.test.pem"])
def test_flat_layout_replaces_a_planted_symlink(tmp_path: Path, name: str) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not touch")
    os.chmod(victim, 0o644)
    out = tmp_path / "out"
    writer = FileSetWriter(out, layout="flat")
    writer.write(creds(1, extra=True))
    os.unlink(out / name)
    os.symlink(victim, out / name)
    assert writer.write(creds(2, extra=True)).changed
    assert victim.read_bytes() == b"do not touch" and mode_of(victim) == 0o644
    for f in creds(2, extra=True):
        path = out / f.name
        assert not path.is_symlink() and path.read_bytes() == f.data and mode_of(path) == f.mode
    assert not [e for e in os.listdir(out) if e.endswith(".tmp")]
    assert writer.links_replaced == 1


@pytest.mark.parametrize("when", ["before-first-write", "between-writes"])
def test_flat_layout_replaces_a_symlinked_subdirectory(tmp_path: Path, when: str) -> None:
    """Never written through; replaced by a real directory (refusing it was a permanent outage)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    writer = FileSetWriter(out, layout="flat")
    if when == "between-writes":
        writer.write(creds(1, extra=True))
        shutil.rmtree(out / "federated")
    os.symlink(elsewhere, out / "federated")
    assert writer.write(creds(2, extra=True)).changed
    assert list(elsewhere.iterdir()) == []
    assert not (out / "federated").is_symlink() and (out / "federated").is_dir()
    assert (out / "federated" / "partner.test.pem").read_bytes() == b"partner\n"
    assert writer.links_replaced == 1
    assert not writer.write(creds(2, extra=True)).changed


def test_flat_layout_refuses_a_file_where_a_directory_belongs(tmp_path: Path) -> None:
    (tmp_path / "federated").write_bytes(b"someone's file")
    with pytest.raises(WriteError, match="expected a directory") as info:
        FileSetWriter(tmp_path, layout="flat").write(creds(1, extra=True))
    assert info.value.path == str(tmp_path / "federated")
    assert (tmp_path / "federated").read_bytes() == b"someone's file"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_planted_hard_link_is_replaced_and_left_alone(tmp_path: Path, layout: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    other = tmp_path / "other-file"
    other.write_bytes(b"someone else's data")
    os.chmod(other, 0o644)
    os.link(other, out / "svid_key.pem")
    writer = FileSetWriter(out, layout=layout)  # type: ignore[arg-type]
    assert writer.write(creds(1)).changed
    assert other.read_bytes() == b"someone else's data" and mode_of(other) == 0o644
    assert other.stat().st_nlink == 1, "the planted name must be replaced, not written through"
    assert (out / "svid_key.pem").read_bytes() == b"key 1\n" and mode_of(out / "svid_key.pem") == 0o600
    assert writer.links_replaced == 1


def test_symlink_layout_refuses_a_foreign_data_entry(tmp_path: Path) -> None:
    (tmp_path / DATA_LINK).mkdir()
    with pytest.raises(WriteError, match="not a symlink"):
        FileSetWriter(tmp_path).write(creds(1))
    os.rmdir(tmp_path / DATA_LINK)
    os.symlink("/etc", tmp_path / DATA_LINK)
    with pytest.raises(WriteError, match="version"):
        FileSetWriter(tmp_path).write(creds(1))


def test_symlink_layout_takes_over_plain_files(tmp_path: Path) -> None:
    """A directory spiffe-helper (or the flat layout) wrote is converted in place."""
    for f in creds(0):
        (tmp_path / f.name).write_bytes(f.data)
    FileSetWriter(tmp_path).write(creds(1))
    assert os.readlink(tmp_path / "svid.pem") == f"{DATA_LINK}/svid.pem"
    assert (tmp_path / "svid.pem").read_bytes() == b"cert 1\n"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_files_dropped_from_the_set_are_removed(tmp_path: Path, layout: str) -> None:
    writer = FileSetWriter(tmp_path, layout=layout)  # type: ignore[arg-type]
    writer.write(creds(1, extra=True))
    assert (tmp_path / "federated" / "partner.test.pem").exists()
    assert writer.write(creds(1)).changed
    assert not (tmp_path / "federated").exists()
    assert visible(tmp_path) == {"svid.pem", "svid_key.pem", "svid_bundle.pem"}


def test_switching_layouts_leaves_no_leftovers(tmp_path: Path) -> None:
    FileSetWriter(tmp_path, layout="flat").write(creds(1, extra=True))
    FileSetWriter(tmp_path).write(creds(2))
    assert not (tmp_path / MANIFEST).exists() and not (tmp_path / "federated").exists()
    assert (tmp_path / "svid.pem").is_symlink()
    FileSetWriter(tmp_path, layout="flat").write(creds(3))
    assert os.listdir(tmp_path) and not (tmp_path / DATA_LINK).exists()
    assert list(iter_versions(tmp_path)) == []
    assert not (tmp_path / "svid.pem").is_symlink() and (tmp_path / "svid.pem").read_bytes() == b"cert 3\n"


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_old_versions_are_pruned(tmp_path: Path, keep: int) -> None:
    writer = FileSetWriter(tmp_path, keep_versions=keep)
    for n in range(6):
        writer.write(creds(n))
    versions = list(iter_versions(tmp_path))
    assert len(versions) == keep
    assert current_version_dir(tmp_path) in versions


def test_leftover_temp_files_are_swept(tmp_path: Path) -> None:
    (tmp_path / ".svid.pem.0123456789abcdef.tmp").write_bytes(b"half")
    os.symlink("..nowhere", tmp_path / "..data_tmp.0123456789abcdef")
    FileSetWriter(tmp_path).write(creds(1))
    assert not (tmp_path / ".svid.pem.0123456789abcdef.tmp").exists()
    assert not os.path.lexists(tmp_path / "..data_tmp.0123456789abcdef")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_remove_deletes_the_whole_set(tmp_path: Path, layout: str) -> None:
    (tmp_path / "unrelated.txt").write_bytes(b"keep me")
    writer = FileSetWriter(tmp_path, layout=layout)  # type: ignore[arg-type]
    writer.write(creds(1, extra=True))
    writer.write(creds(2, extra=True))
    writer.remove()
    assert sorted(os.listdir(tmp_path)) == ["unrelated.txt"]
    writer.remove()  # idempotent
    FileSetWriter(tmp_path / "never-created").remove()


def test_read_current_pins_one_version(tmp_path: Path) -> None:
    writer = FileSetWriter(tmp_path)
    writer.write(creds(1))
    assert read_current(tmp_path, ["svid.pem", "svid_key.pem"]) == {
        "svid.pem": b"cert 1\n",
        "svid_key.pem": b"key 1\n",
    }
    flat = tmp_path / "flat"
    FileSetWriter(flat, layout="flat").write(creds(2))
    assert read_current(flat, ["svid_key.pem"]) == {"svid_key.pem": b"key 2\n"}


def test_invalid_sets_are_rejected_before_touching_disk(tmp_path: Path) -> None:
    writer = FileSetWriter(tmp_path / "out")
    with pytest.raises(ValueError, match="duplicate"):
        writer.write([FileSpec("a", b"1"), FileSpec("a", b"2")])
    with pytest.raises(ValueError, match="duplicate"):
        writer.write([FileSpec("a", b"1", 0o644), FileSpec("a", b"1", 0o600)])
    with pytest.raises(ValueError, match="inside"):
        writer.write([FileSpec("a", b"1"), FileSpec("a/b", b"2")])
    with pytest.raises(ValueError, match="at least one"):
        writer.write([])
    assert not (tmp_path / "out").exists()


def test_switching_to_flat_with_subdirectories_asks_for_remove(tmp_path: Path) -> None:
    FileSetWriter(tmp_path).write(creds(1, extra=True))
    with pytest.raises(WriteError, match=r"remove\(\) the set"):
        FileSetWriter(tmp_path, layout="flat").write(creds(2, extra=True))
    assert (tmp_path / "svid.pem").read_bytes() == b"cert 1\n"
    FileSetWriter(tmp_path).remove()
    assert FileSetWriter(tmp_path, layout="flat").write(creds(2, extra=True)).changed


def test_identical_duplicates_are_written_once(tmp_path: Path) -> None:
    """pem and combined both render svid_bundle.pem: one directory can hold both formats."""
    result = FileSetWriter(tmp_path).write([*creds(1), FileSpec("svid_bundle.pem", b"bundle\n", 0o644)])
    assert len(result.written) == 3


@pytest.mark.parametrize("layout", LAYOUTS)
def test_names_with_spaces_are_written(tmp_path: Path, layout: str) -> None:
    """spiffe-helper accepts any file name; spaces inside a name must work here too."""
    writer = FileSetWriter(str(tmp_path), layout=layout)  # type: ignore[arg-type]
    writer.write([FileSpec("my svid.pem", b"cert\n", 0o644), FileSpec("sub dir/my key.pem", b"k\n", 0o600)])
    assert (tmp_path / "my svid.pem").read_bytes() == b"cert\n"
    assert stat.S_IMODE((tmp_path / "sub dir" / "my key.pem").stat().st_mode) == 0o600
    for bad in (" lead.pem", "dir/ lead.pem"):
        with pytest.raises(ValueError, match="invalid file name"):
            FileSpec(bad, b"")
