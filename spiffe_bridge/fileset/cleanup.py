"""Removing what a directory holds besides the current set, and switching layouts.

Old versions (pruned), the other layout's files when the layout changed, a crash's
temp files, and everything for :meth:`~spiffe_bridge.fileset.FileSetWriter.remove`.
Only names this package makes are removed, and only through :mod:`._safeio`, so a
planted manifest or link cannot make it delete anything outside the directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat

from spiffe_bridge.fileset import _safeio as io
from spiffe_bridge.fileset.names import DATA_LINK, MANIFEST, TEMP_RE, VERSION_RE, check_name
from spiffe_bridge.fileset.outdir import OutputDir

log = logging.getLogger("spiffe_bridge.fileset")  # one logger for the package

_MANIFEST_LIMIT = 1 << 20


def sweep_temps(dfd: int) -> None:
    """Remove temp files and links left behind by a crash."""
    for entry in os.listdir(dfd):
        if TEMP_RE.match(entry):
            st = io.lstat(dfd, entry)
            if st is not None and stat.S_ISDIR(st.st_mode):
                continue
            io.unlink_quiet(dfd, entry)


def manifest_names(dfd: int) -> list[str]:
    """Names an earlier flat-layout write left here; none while a symlink-layout set is in place.

    The file may be planted: its names are only ever removed with :func:`._safeio.remove_under`.
    """
    if io.lstat(dfd, DATA_LINK) is not None:
        return []
    raw = io.read_limited(dfd, MANIFEST, _MANIFEST_LIMIT)
    if raw is None:
        return []
    try:
        names = json.loads(raw)
    except ValueError:
        return []
    out = []
    for name in names if isinstance(names, list) else []:
        try:
            check_name(name)
        except (ValueError, TypeError, AttributeError):
            continue
        out.append(name)
    return out


def flat_leftovers(out: OutputDir, keep: set[str]) -> list[str]:
    """What a flat-layout write left that a symlink-layout set of top names ``keep`` replaces.

    Computed before ``..data`` is switched: once it exists the manifest is no longer read.
    """
    return [n for n in manifest_names(out.fd) if n.split("/")[0] not in keep] + (
        [MANIFEST] if io.lstat(out.fd, MANIFEST) else []
    )


def remove_flat_files(out: OutputDir, keep: set[str]) -> None:
    """Remove the flat-layout files (the manifest's and this writer's) not in ``keep``, and the manifest."""
    for name in sorted(set(manifest_names(out.fd)) | out.flat_names):
        if name not in keep:
            io.remove_under(out.fd, name)
    out.flat_names = frozenset()
    if io.lstat(out.fd, MANIFEST) is not None:
        os.unlink(MANIFEST, dir_fd=out.fd)


def remove_links(out: OutputDir, keep: set[str]) -> None:
    """Unlink the symlink layout's visible links, except those named in ``keep``."""
    for entry in os.listdir(out.fd):
        if entry not in keep and out.is_our_link(entry):
            os.unlink(entry, dir_fd=out.fd)


def drop_data_link(dfd: int) -> None:
    """Unlink ``..data`` if it is a link (anything else there is not ours)."""
    st = io.lstat(dfd, DATA_LINK)
    if st is not None and stat.S_ISLNK(st.st_mode):
        os.unlink(DATA_LINK, dir_fd=dfd)


def prune(out: OutputDir, keep: set[str]) -> None:
    """Delete old version directories beyond ``keep_versions`` (never one in ``keep``; all if empty)."""
    versions = sorted((e for e in os.listdir(out.fd) if VERSION_RE.match(e)), reverse=True)
    budget = out.keep_versions - len(keep) if keep else 0
    for entry in versions:
        if entry in keep:
            continue
        if budget > 0:
            budget -= 1
            continue
        try:
            shutil.rmtree(entry, dir_fd=out.fd)
        except OSError as exc:
            log.warning("could not prune old version %s: %s", out.path(entry), exc.strerror)


def clear_symlink_layout(out: OutputDir) -> None:
    """Remove a symlink-layout set: its links, ``..data`` and every version (switching to flat)."""
    remove_links(out, keep=set())
    drop_data_link(out.fd)
    prune(out, keep=set())


def remove_all(out: OutputDir) -> None:
    """Remove every set this package wrote here, in either layout, and any temp files; fsync."""
    remove_flat_files(out, keep=set())
    clear_symlink_layout(out)
    sweep_temps(out.fd)
    io.fsync_dir(out.fd)
