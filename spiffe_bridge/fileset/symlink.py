"""The symlink layout: a new version directory per set, one ``rename`` of ``..data`` switches it.

Each visible name is a fixed link ``svid.pem -> ..data/svid.pem``, so cert, key and
bundle change together (the Kubernetes secret-volume pattern). The previous version is
kept (``keep_versions``) for readers that pinned it mid-read.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Sequence

from spiffe_bridge.fileset import _safeio as io
from spiffe_bridge.fileset import cleanup
from spiffe_bridge.fileset.names import DATA_LINK, VERSION_RE, new_version_name, temp_link_name
from spiffe_bridge.fileset.outdir import OutputDir, planted
from spiffe_bridge.fileset.spec import FileSpec, WriteError, WriteResult, oserror


def write(out: OutputDir, specs: list[FileSpec]) -> WriteResult:
    """Switch the directory to a version holding exactly ``specs``, or repair links; no-op if current."""
    dfd = out.fd
    current = _current_version(out)
    tops = _tops(specs)
    for top in tops:
        out.check_target(top)
    changed = [s for s in specs if current is None or not out.same_at(f"{current}/{s.name}", s)]
    same_set = current is not None and _version_names(dfd, current) == {s.name for s in specs}
    links_ok = all(out.is_our_link(top) for top in tops)
    stale = _stale_entries(out, tops)
    if not changed and same_set and links_ok and not stale:
        return WriteResult(False, ())
    if not changed and same_set:
        repaired = _link_and_clean(out, tops, stale)
        return WriteResult(True, tuple(out.path(t) for t in repaired))
    new = _make_version(out, specs)
    try:
        _swap(dfd, new)
    except OSError as exc:
        shutil.rmtree(new, dir_fd=dfd, ignore_errors=True)
        raise oserror(out.path(DATA_LINK), exc, "switching to the new version: ") from None
    try:
        _link_and_clean(out, tops, stale)
    except OSError as exc:
        raise oserror(str(out.directory), exc, "creating visible links: ") from None
    keep = {new} | ({current} if current and out.keep_versions > 1 else set())
    if io.DEFER_SYNC.get():
        out.unpruned = keep  # unlinking old versions is slow too: FileSetWriter.sync() does it
    else:
        cleanup.prune(out, keep)
    return WriteResult(True, tuple(out.path(s.name) for s in changed))


def _tops(specs: Sequence[FileSpec]) -> list[str]:
    """The top-level names of the set, in order: each gets one visible link."""
    seen: dict[str, None] = {}
    for spec in specs:
        seen.setdefault(spec.name.split("/")[0], None)
    return list(seen)


def current_version(dfd: int) -> str | None:
    """The version ``..data`` names (no checks): where a write just put its files."""
    target = io.readlink(dfd, DATA_LINK)
    return target if target and VERSION_RE.match(target) else None


def _current_version(out: OutputDir) -> str | None:
    """The version ``..data`` points at, None if none; refuse a ``..data`` we did not make."""
    st = io.lstat(out.fd, DATA_LINK)
    if st is None:
        return None
    if not stat.S_ISLNK(st.st_mode):
        raise WriteError(out.path(DATA_LINK), "exists but is not a symlink; refusing", errno.EEXIST)
    target = io.readlink(out.fd, DATA_LINK) or ""
    if not VERSION_RE.match(target):
        raise WriteError(
            out.path(DATA_LINK),
            f"points at {target!r}, not a version dir; refusing",
            errno.EEXIST,
        )
    vst = io.lstat(out.fd, target)
    return target if vst is not None and stat.S_ISDIR(vst.st_mode) else None


def _version_names(dfd: int, version: str) -> set[str]:
    """The relative names of the files in ``version``."""
    names: set[str] = set()
    for dirpath, _dirs, files, _fd in os.fwalk(version, dir_fd=dfd):  # never follows a link
        rel = os.path.relpath(dirpath, version)
        names.update(f if rel == "." else f"{rel}/{f}" for f in files)
    return names


def _stale_entries(out: OutputDir, tops: list[str]) -> list[str]:
    """Our links not in the new set, plus files listed by an earlier flat-layout write."""
    keep = set(tops)
    links = [e for e in os.listdir(out.fd) if e not in keep and out.is_our_link(e)]
    return links + cleanup.flat_leftovers(out, keep)


def _make_version(out: OutputDir, specs: list[FileSpec]) -> str:
    """Write ``specs`` into a new version directory, every file and directory fsynced; its name."""
    dfd = out.fd
    name = new_version_name()
    try:
        os.mkdir(name, 0o700, dir_fd=dfd)
    except OSError as exc:
        raise oserror(out.path(name), exc, "creating the version directory: ") from None
    current = out.path(name)
    try:
        vfd = os.open(name, io.OPEN_DIR | os.O_NOFOLLOW, dir_fd=dfd)
        try:
            subdirs: set[tuple[str, ...]] = set()
            for spec in specs:
                current = out.path(f"{name}/{spec.name}")
                *parents, base = spec.name.split("/")
                pfd = io.open_subdir(vfd, parents, create=True)
                try:
                    io.write_new(pfd, base, spec, out.uid, out.gid)
                finally:
                    os.close(pfd)
                if parents:
                    subdirs.add(tuple(parents))
            # Each directory is synced once, after all its entries exist (an fsync per
            # file was most of a rotation's cost on a busy disk).
            for parents_key in subdirs:
                pfd = io.open_subdir(vfd, parents_key, create=False)
                try:
                    io.fsync_dir(pfd)
                finally:
                    os.close(pfd)
            current = out.path(name)
            os.fchmod(vfd, io.DIR_MODE)
            io.fsync_dir(vfd)
        finally:
            os.close(vfd)
    except OSError as exc:
        shutil.rmtree(name, dir_fd=dfd, ignore_errors=True)
        raise oserror(current, exc) from None
    return name


def _swap(dfd: int, version: str) -> None:
    """Point ``..data`` at ``version`` with one rename: the moment the whole set switches."""
    tmp = temp_link_name("data")
    os.symlink(version, tmp, dir_fd=dfd)
    try:
        os.rename(tmp, DATA_LINK, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError:
        io.unlink_quiet(dfd, tmp)
        raise
    io.fsync_dir(dfd)


def _link_and_clean(out: OutputDir, tops: list[str], stale: list[str]) -> list[str]:
    """Point every visible name at ``..data``; drop the ``stale`` links and flat files."""
    dfd = out.fd
    made = []
    for top in tops:
        if out.is_our_link(top):
            continue
        was = planted(dfd, top, f"{DATA_LINK}/{top}")
        tmp = temp_link_name("link")
        os.symlink(f"{DATA_LINK}/{top}", tmp, dir_fd=dfd)
        try:
            os.rename(tmp, top, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError:
            io.unlink_quiet(dfd, tmp)
            raise
        out.note_replaced(top, was)
        made.append(top)
    for entry in stale:
        io.remove_under(dfd, entry)
    if made or stale:  # otherwise nothing changed here since the swap's own fsync
        io.fsync_dir(dfd)
    return made
