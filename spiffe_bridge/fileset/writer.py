"""FileSetWriter: one output directory, one lock, pinned where it led at first use; the layouts write."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from spiffe_bridge.fileset import _safeio as io
from spiffe_bridge.fileset import cleanup, flat, symlink
from spiffe_bridge.fileset.names import MANIFEST
from spiffe_bridge.fileset.outdir import OutputDir
from spiffe_bridge.fileset.spec import FileSpec, Layout, WriteError, WriteResult, check_specs, oserror

_T = TypeVar("_T")


class FileSetWriter:
    """Writes credential file sets into one directory, atomically and without following planted links.

    ``write`` returns ``WriteResult(changed=False)`` and touches nothing when content,
    modes and owners already match. ``remove`` deletes everything this class wrote
    (both layouts), for the "delete credentials when the identity is lost" policy.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        layout: Layout = "symlink",
        uid: int | None = None,
        gid: int | None = None,
        keep_versions: int = 2,
    ) -> None:
        if layout not in ("flat", "symlink"):
            raise ValueError(f"layout must be 'flat' or 'symlink', not {layout!r}")
        if keep_versions < 1:
            raise ValueError("keep_versions must be at least 1 (the current version)")
        self.directory = Path(os.path.abspath(directory))
        self.layout: Layout = layout
        self.uid = uid
        self.gid = gid
        self.keep_versions = keep_versions
        self._lock = threading.Lock()
        self._swept = False
        #: Links planted at a visible name that a write replaced (see :meth:`OutputDir.note_replaced`).
        self.links_replaced = 0
        #: Names of this writer's last flat-layout set: removed later even if the manifest was replaced.
        self._flat_names: frozenset[str] = frozenset()
        #: Where the configured path led on first use (it may be a symlink then, by design).
        self._resolved: str | None = None
        #: Names (relative to the directory) a ``write(durable=False)`` left for ``sync()``.
        self._unsynced: list[str] = []
        #: Versions to keep when ``sync()`` prunes after a ``write(durable=False)``.
        self._unpruned: set[str] | None = None

    def __repr__(self) -> str:
        return f"FileSetWriter({str(self.directory)!r}, layout={self.layout!r})"

    def write(self, files: Sequence[FileSpec], *, durable: bool = True) -> WriteResult:
        """Make the directory hold exactly ``files``; raise WriteError (old set intact) on failure.

        ``durable=False`` skips every fsync (renames stay atomic, so readers still never
        see a torn set) and the pruning of old versions, and leaves both to :meth:`sync`:
        the daemon swaps first and makes the set durable off its event loop afterwards.
        """
        specs = check_specs(files)
        with self._lock:
            dfd = self._open_dir(create=True)
            token = io.DEFER_SYNC.set(not durable)
            try:
                if not self._swept:
                    cleanup.sweep_temps(dfd)
                    self._swept = True
                layout_write = symlink.write if self.layout == "symlink" else flat.write
                result = self._run(dfd, lambda out: layout_write(out, specs))
                if result.changed and not durable:
                    version = symlink.current_version(dfd) if self.layout == "symlink" else None
                    base = f"{version}/" if version else ""
                    self._unsynced = [base + s.name for s in specs] + ([] if version else [MANIFEST])
                return result
            finally:
                io.DEFER_SYNC.reset(token)
                os.close(dfd)

    def sync(self) -> None:
        """Fsync what the last ``write(durable=False)`` left (files, then directories), then prune."""
        with self._lock:
            names, self._unsynced = self._unsynced, []
            keep, self._unpruned = self._unpruned, None
            if not names and keep is None:
                return
            dfd = self._open_dir(create=False)
            try:
                dirs: set[str] = {""}
                for name in names:
                    parent, _, base = name.rpartition("/")
                    parts = parent.split("/") if parent else []
                    dirs.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
                    with contextlib.suppress(FileNotFoundError):  # pruned or replaced meanwhile
                        io.fsync_at(dfd, parts, base)
                for sub in sorted(dirs, key=len, reverse=True) if names else []:
                    with contextlib.suppress(FileNotFoundError):
                        pfd = io.open_subdir(dfd, sub.split("/") if sub else [], create=False)
                        try:
                            io.fsync_dir(pfd, now=True)
                        finally:
                            os.close(pfd)
                if keep is not None:
                    self._run(dfd, lambda out: cleanup.prune(out, keep))
            except OSError as exc:
                raise oserror(str(self.directory), exc, "syncing the file set: ") from None
            finally:
                os.close(dfd)

    def remove(self) -> None:
        """Delete the set written here (links, versions, ``..data``, flat files, temp files)."""
        with self._lock:
            try:
                dfd = self._open_dir(create=False)
            except WriteError as exc:
                if exc.errno == errno.ENOENT:
                    return
                raise
            try:
                self._run(dfd, cleanup.remove_all)
            except OSError as exc:
                raise oserror(str(self.directory), exc, "removing the file set: ") from None
            finally:
                os.close(dfd)

    def _run(self, dfd: int, step: Callable[[OutputDir], _T]) -> _T:
        """Run one layout step on the open directory; keep what it changed of this writer's state."""
        out = OutputDir(
            dfd,
            self.directory,
            uid=self.uid,
            gid=self.gid,
            keep_versions=self.keep_versions,
            flat_names=self._flat_names,
        )
        try:
            return step(out)
        finally:
            self.links_replaced += out.links_replaced
            self._flat_names = out.flat_names
            if out.unpruned is not None:
                self._unpruned = out.unpruned

    def _open_dir(self, create: bool) -> int:
        """Open the output directory; refuse one that now leads somewhere else than at first use.

        A configured path that is a symlink from the start is fine, but if the
        directory is swapped for a symlink (or its link retargeted) while we run,
        following it would write keys outside the directory the operator chose.
        """
        try:
            if create:
                os.makedirs(self.directory, mode=io.DIR_MODE, exist_ok=True)
            resolved = os.path.realpath(self.directory)
            if self._resolved is None:
                self._resolved = resolved
            elif resolved != self._resolved:
                raise WriteError(
                    str(self.directory),
                    f"the output directory now leads to {resolved}, not {self._resolved} as when it "
                    "was first used; refusing to write there",
                    errno.EXDEV,
                )
            fd = os.open(resolved, io.OPEN_DIR | os.O_NOFOLLOW)
        except OSError as exc:
            if isinstance(exc, WriteError):
                raise
            raise oserror(str(self.directory), exc, "output directory: ") from None
        return fd
