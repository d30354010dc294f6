"""The flat layout: each visible name is a regular file replaced by its own ``rename``.

For consumers that refuse symlinks. Every new file is written and fsynced before the
first rename, but the renames happen one after another, so a reader may briefly see a
new certificate with the old key. The manifest records the names written, so a name
dropped from the set is removed by the next write.
"""

from __future__ import annotations

import errno
import json
import os
import stat

from spiffe_bridge.fileset import _safeio as io
from spiffe_bridge.fileset import cleanup
from spiffe_bridge.fileset.names import DATA_LINK, MANIFEST, temp_file_name, temp_manifest_name
from spiffe_bridge.fileset.outdir import OutputDir, planted
from spiffe_bridge.fileset.spec import FileSpec, WriteError, WriteResult, oserror


def write(out: OutputDir, specs: list[FileSpec]) -> WriteResult:
    """Replace the changed files, remove dropped ones and any symlink-layout set; no-op if current."""
    dfd = out.fd
    dir_links = _check_targets(out, specs)
    names = {s.name for s in specs}
    previous = cleanup.manifest_names(dfd)
    changed = [s for s in specs if not out.same_at(s.name, s)]
    stale = sorted((set(previous) | out.flat_names) - names)
    leftovers = io.lstat(dfd, DATA_LINK) is not None
    if not changed and not stale and not leftovers:
        if sorted(previous) != sorted(names):
            _store_manifest(out, names)
        out.flat_names = frozenset(names)
        return WriteResult(False, ())
    staged: list[tuple[int, str, str, str]] = []  # (parent fd, temp, final base, visible path)
    try:
        try:
            for sub in dir_links:  # the files below them are all in ``changed``
                _unplant(out, sub)
            for spec in changed:
                *parents, base = spec.name.split("/")
                pfd = io.open_subdir(dfd, parents, create=True)
                tmp = temp_file_name(base)
                staged.append((pfd, tmp, base, out.path(spec.name)))
                io.write_new(pfd, tmp, spec, out.uid, out.gid)
        except OSError as exc:
            path = staged[-1][3] if staged else str(out.directory)
            for pfd, tmp, _, _ in staged:
                io.unlink_quiet(pfd, tmp)
            raise oserror(path, exc, "previous files unchanged: ") from None
        for i, (pfd, tmp, base, path) in enumerate(staged):
            rel = os.path.relpath(path, out.directory)
            was = planted(pfd, base, None if "/" in rel else f"{DATA_LINK}/{rel}")
            try:
                os.rename(tmp, base, src_dir_fd=pfd, dst_dir_fd=pfd)
            except OSError as exc:
                for pfd2, tmp2, _, _ in staged[i:]:
                    io.unlink_quiet(pfd2, tmp2)
                raise oserror(path, exc, "set partly replaced: ") from None
            out.note_replaced(rel, was)
        synced: set[tuple[int, int]] = set()
        for pfd, _, _, _ in staged:  # once per directory; the top one is synced below
            st = os.fstat(pfd)
            if (st.st_dev, st.st_ino) not in synced and not os.path.samestat(st, os.fstat(dfd)):
                synced.add((st.st_dev, st.st_ino))
                io.fsync_dir(pfd)
    finally:
        for pfd, _, _, _ in staged:
            os.close(pfd)
    try:
        for name in stale:
            io.remove_under(dfd, name)
        _write_manifest(dfd, sorted(names))
        if leftovers:  # switching from the symlink layout
            cleanup.clear_symlink_layout(out)
        io.fsync_dir(dfd)
    except OSError as exc:
        raise oserror(out.path(MANIFEST), exc) from None
    out.flat_names = frozenset(names)
    return WriteResult(True, tuple(path for _, _, _, path in staged))


def _check_targets(out: OutputDir, specs: list[FileSpec]) -> list[str]:
    """Refuse what a flat write cannot replace; return planted symlinks where a directory belongs."""
    dir_links: list[str] = []
    for spec in specs:
        *parents, _ = spec.name.split("/")
        for i in range(len(parents)):
            sub = "/".join(parents[: i + 1])
            st = io.lstat(out.fd, sub)  # the parts before ``sub`` are real directories
            if st is None or stat.S_ISDIR(st.st_mode):
                continue
            if i == 0 and out.is_our_link(sub):
                hint = "left by the symlink layout; remove() the set before switching to flat"
                raise WriteError(out.path(sub), hint, errno.ENOTDIR)
            if not stat.S_ISLNK(st.st_mode):
                raise WriteError(out.path(sub), "expected a directory; remove it", errno.ENOTDIR)
            if sub not in dir_links:
                dir_links.append(sub)
            break
        else:
            out.check_target(spec.name)
    return dir_links


def _unplant(out: OutputDir, name: str) -> None:
    """Unlink the planted symlink ``name`` (never following it) so a directory can take its place."""
    pfd, base = io.open_parent(out.fd, name)
    try:
        st = io.lstat(pfd, base)
        if st is not None and stat.S_ISLNK(st.st_mode):
            was = planted(pfd, base, None)
            os.unlink(base, dir_fd=pfd)
            out.note_replaced(name, was)
    finally:
        os.close(pfd)


def _store_manifest(out: OutputDir, names: set[str]) -> None:
    """Bring the manifest up to date when the files already are."""
    try:
        _write_manifest(out.fd, sorted(names))
        io.fsync_dir(out.fd)
    except OSError as exc:
        raise oserror(out.path(MANIFEST), exc) from None


def _write_manifest(dfd: int, names: list[str]) -> None:
    """Replace the manifest with ``names`` (atomically; untouched when it already says that)."""
    spec = FileSpec("manifest", json.dumps(names).encode(), 0o644)
    if io.same_file(dfd, MANIFEST, spec, None, None):
        return
    tmp = temp_manifest_name()
    io.write_new(dfd, tmp, spec, None, None)
    os.rename(tmp, MANIFEST, src_dir_fd=dfd, dst_dir_fd=dfd)
