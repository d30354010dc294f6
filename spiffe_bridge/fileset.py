"""Atomic credential file sets: readers never see a torn file or a half-switched set.

Every file is written to a fresh name in the target directory (``O_EXCL|O_NOFOLLOW``,
0600 at creation), fsynced, given its final mode (and owner) and only then made
visible by ``rename(2)``; the directory is fsynced afterwards. Two layouts:

* ``symlink`` (default) -- the Kubernetes secret-volume pattern. The files live in a
  versioned directory ``..<UTC timestamp>.<ns>_<random>``; the symlink ``..data``
  points at the current version and each visible name is a fixed symlink
  ``svid.pem -> ..data/svid.pem``. One ``rename`` of ``..data`` switches cert, key
  and bundle together. A reader that wants a coherent pair opens ``..data`` once
  (as a directory fd, see :func:`read_current`) and reads every file from it.
* ``flat`` -- each visible name is a regular file replaced by its own rename, for
  consumers that refuse symlinks. Files are switched one after another, so a
  reader may briefly see a new certificate with the old key.

Nothing is ever written through an existing name, and nothing read back from the
directory is trusted to lead anywhere: every name is resolved one component at a time
from the directory's fd with ``O_NOFOLLOW``, so a planted link (or manifest) cannot make
the writer (usually root) write, chmod or delete outside it. A symlink or hard link
planted at a visible name (or a symlink where a flat-layout subdirectory belongs) is
replaced, never followed, logged at WARNING and counted in
:attr:`FileSetWriter.links_replaced`; a directory or special file there is refused with
:class:`WriteError`. The previous set stays intact on every failure. One writer per
directory (the sidecar's wiring guarantees it).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from spiffe_bridge.errors import SpiffeBridgeError

log = logging.getLogger(__name__)

Layout = Literal["flat", "symlink"]

#: The symlink naming the current version directory (symlink layout).
DATA_LINK = "..data"
#: Names written by the last flat-layout write, so names dropped from the set get removed.
MANIFEST = ".spiffe-bridge-files.json"

_VERSION_RE = re.compile(r"^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d{9}_[0-9a-f]{8}$")
_TEMP_RE = re.compile(r"^(\.\.(data|link)_tmp\.[0-9a-f]{16}|\..+\.[0-9a-f]{16}\.tmp)$")
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9_@+=,-][A-Za-z0-9_@+=,. -]*$")  # spaces: legal in spiffe-helper
_DIR_MODE = 0o755
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: True inside ``write(durable=False)``: fsyncs are skipped and left to ``sync()``.
_DEFER_SYNC: ContextVar[bool] = ContextVar("spiffe_bridge_defer_sync", default=False)


class WriteError(SpiffeBridgeError, OSError):
    """A credential file set could not be written; ``path`` and ``reason`` say where and why."""

    def __init__(self, path: str | os.PathLike[str], reason: str, err: int | None = None) -> None:
        super().__init__(err or 0, reason)
        self.errno = err
        self.path = os.fspath(path)
        self.filename = self.path
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"


@dataclass(frozen=True)
class FileSpec:
    """One file of a set: relative ``name`` (may contain ``/``), content and permission bits."""

    name: str
    data: bytes = field(repr=False)
    mode: int = 0o644

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.data, bytes):
            raise TypeError(f"FileSpec {self.name!r}: data must be bytes")
        if self.mode & ~0o777:
            raise ValueError(f"FileSpec {self.name!r}: mode {self.mode:#o} has bits beyond 0o777")


@dataclass(frozen=True)
class WriteResult:
    """Whether anything on disk changed, and the visible paths whose content or mode changed."""

    changed: bool
    written: tuple[str, ...] = ()


def _check_name(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or not all(_COMPONENT_RE.match(p) for p in parts):
        raise ValueError(
            f"invalid file name {name!r}: use relative names of letters, digits, spaces and '._@+=,-', "
            "no empty, '.' or '..' components, nothing starting with '.' or a space"
        )


def _check_specs(files: Sequence[FileSpec]) -> list[FileSpec]:
    by_name: dict[str, FileSpec] = {}
    for spec in files:  # formats sharing a directory may both render e.g. svid_bundle.pem
        seen = by_name.setdefault(spec.name, spec)
        if seen != spec:
            raise ValueError(f"duplicate file name {spec.name!r} with different content or mode in the set")
    specs = list(by_name.values())
    if not specs:
        raise ValueError("a file set needs at least one file")
    names = set(by_name)
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in names:
                raise ValueError(f"{name!r} is inside {'/'.join(parts[:i])!r}, which is also a file")
    return specs


def _oserror(path: str, exc: OSError, what: str = "") -> WriteError:
    code = errno.errorcode.get(exc.errno or 0, "")
    reason = f"{what}{exc.strerror or exc}" + (f" [{code}]" if code else "")
    return WriteError(path, reason, exc.errno)


def _write_new(dir_fd: int, name: str, spec: FileSpec, uid: int | None, gid: int | None) -> None:
    """Create ``name`` exclusively, write, set owner and mode, fsync; unlink it on failure."""
    fd = os.open(name, _OPEN_NEW, 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(spec.data)
        while view:
            view = view[os.write(fd, view) :]
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        os.fchmod(fd, spec.mode)
        if not _DEFER_SYNC.get():
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quiet(dir_fd, name)
        raise
    os.close(fd)


def _unlink_quiet(dir_fd: int, name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def _same_file(dir_fd: int, name: str, spec: FileSpec, uid: int | None, gid: int | None) -> bool:
    """True when ``name`` is a plain single-link file with exactly this content, mode and owner."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != len(spec.data):
            return False
        if stat.S_IMODE(st.st_mode) != spec.mode:
            return False
        if (uid is not None and st.st_uid != uid) or (gid is not None and st.st_gid != gid):
            return False
        chunks = []
        remaining = len(spec.data) + 1
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks) == spec.data
    except OSError:
        return False
    finally:
        os.close(fd)


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _readlink(dir_fd: int, name: str) -> str | None:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None


def _open_subdir(dir_fd: int, parts: Sequence[str], create: bool) -> int:
    """Open (and optionally create) nested directories without following any symlink."""
    fd = os.dup(dir_fd)
    try:
        for part in parts:
            made = False
            if create:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                    made = True
                except FileExistsError:
                    pass
            nxt = os.open(part, _OPEN_DIR | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
            if made:
                os.fchmod(fd, _DIR_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_parent(dir_fd: int, name: str) -> tuple[int, str]:
    """The directory holding relative ``name`` (opened without following a link) and its last part."""
    *parents, base = name.split("/")
    return _open_subdir(dir_fd, parents, create=False), base


def _remove_under(dir_fd: int, name: str) -> None:
    """Unlink the file or link ``name`` below ``dir_fd``, then rmdir the parents it left empty.

    Every parent is opened with ``O_NOFOLLOW`` and every unlink/rmdir names a single
    component in its parent's fd, so a link anywhere on the way (``x -> /victim`` for
    ``x/secret.txt``) ends the removal instead of reaching outside ``dir_fd``.
    """
    *parents, base = name.split("/")
    fds = [os.dup(dir_fd)]
    try:
        for part in parents:
            try:
                fds.append(os.open(part, _OPEN_DIR | os.O_NOFOLLOW, dir_fd=fds[-1]))
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    return  # gone, or a link / non-directory: nothing of ours is behind it
                raise
        st = _lstat(fds[-1], base)
        if st is None or stat.S_ISDIR(st.st_mode):
            return
        os.unlink(base, dir_fd=fds[-1])
        for depth in range(len(parents), 0, -1):
            try:
                os.rmdir(parents[depth - 1], dir_fd=fds[depth - 1])
            except OSError:
                break
    finally:
        for fd in fds:
            os.close(fd)


def _fsync_dir(fd: int) -> None:
    if _DEFER_SYNC.get():
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.EROFS):
            raise


def _tops(specs: Sequence[FileSpec]) -> list[str]:
    seen: dict[str, None] = {}
    for spec in specs:
        seen.setdefault(spec.name.split("/")[0], None)
    return list(seen)


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
        #: Links planted at a visible name that a write replaced (see :meth:`_note_replaced`).
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

    # -- public ---------------------------------------------------------------------------

    def write(self, files: Sequence[FileSpec], *, durable: bool = True) -> WriteResult:
        """Make the directory hold exactly ``files``; raise WriteError (old set intact) on failure.

        ``durable=False`` skips every fsync (renames stay atomic, so readers still never
        see a torn set) and the pruning of old versions, and leaves both to :meth:`sync`:
        the daemon swaps first and makes the set durable off its event loop afterwards.
        """
        specs = _check_specs(files)
        with self._lock:
            dfd = self._open_dir(create=True)
            token = _DEFER_SYNC.set(not durable)
            try:
                if not self._swept:
                    self._sweep_temps(dfd)
                    self._swept = True
                if self.layout == "symlink":
                    result = self._write_symlink(dfd, specs)
                    base = (self._current_version(dfd) or "") + "/" if result.changed else ""
                else:
                    result = self._write_flat(dfd, specs)
                    base = ""
                if result.changed and not durable:
                    self._unsynced = [base + s.name for s in specs] + ([MANIFEST] if not base else [])
                return result
            finally:
                _DEFER_SYNC.reset(token)
                os.close(dfd)

    def sync(self) -> None:
        """Fsync what the last ``write(durable=False)`` left (deepest first), then prune old versions."""
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
                        pfd = _open_subdir(dfd, parts, create=False)
                        try:
                            fd = os.open(
                                base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=pfd
                            )
                        finally:
                            os.close(pfd)
                        try:
                            os.fsync(fd)
                        finally:
                            os.close(fd)
                for sub in sorted(dirs, key=len, reverse=True) if names else []:
                    with contextlib.suppress(FileNotFoundError):
                        pfd = _open_subdir(dfd, sub.split("/") if sub else [], create=False)
                        try:
                            _fsync_dir(pfd)
                        finally:
                            os.close(pfd)
                if keep is not None:
                    self._prune(dfd, keep)
            except OSError as exc:
                raise _oserror(str(self.directory), exc, "syncing the file set: ") from None
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
                self._remove_flat_files(dfd, keep=set())
                self._remove_links(dfd, keep=set())
                self._drop_data_link(dfd)
                self._prune(dfd, keep=set())
                self._sweep_temps(dfd)
                _fsync_dir(dfd)
            except OSError as exc:
                raise _oserror(str(self.directory), exc, "removing the file set: ") from None
            finally:
                os.close(dfd)

    # -- shared helpers -------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _open_dir(self, create: bool) -> int:
        """Open the output directory; refuse one that now leads somewhere else than at first use.

        A configured path that is a symlink from the start is fine, but if the
        directory is swapped for a symlink (or its link retargeted) while we run,
        following it would write keys outside the directory the operator chose.
        """
        try:
            if create:
                os.makedirs(self.directory, mode=_DIR_MODE, exist_ok=True)
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
            fd = os.open(resolved, _OPEN_DIR | os.O_NOFOLLOW)
        except OSError as exc:
            if isinstance(exc, WriteError):
                raise
            raise _oserror(str(self.directory), exc, "output directory: ") from None
        return fd

    def _sweep_temps(self, dfd: int) -> None:
        """Remove temp files and links left behind by a crash."""
        for entry in os.listdir(dfd):
            if _TEMP_RE.match(entry):
                st = _lstat(dfd, entry)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    continue
                _unlink_quiet(dfd, entry)

    def _is_our_link(self, dfd: int, name: str) -> bool:
        return _readlink(dfd, name) == f"{DATA_LINK}/{name}"

    def _check_target(self, dfd: int, name: str) -> None:
        """Refuse a directory or special file at a visible name (links there get replaced)."""
        try:
            pfd, base = _open_parent(dfd, name)
        except OSError:
            return  # no parent yet (or not a directory): creating it reports the problem
        try:
            st = _lstat(pfd, base)
        finally:
            os.close(pfd)
        if st is None or stat.S_ISLNK(st.st_mode):
            return
        if stat.S_ISDIR(st.st_mode):
            raise WriteError(self._path(name), "a directory is in the way; remove it", errno.EISDIR)
        if not stat.S_ISREG(st.st_mode):
            raise WriteError(self._path(name), "not a regular file; remove it", errno.EEXIST)

    def _planted(self, pfd: int, base: str, ours: str | None) -> str | None:
        """What a rename is about to replace at ``base`` if we did not put it there, else None.

        ``ours`` is the link target this writer itself creates at that name, if any.
        """
        st = _lstat(pfd, base)
        if st is None:
            return None
        if stat.S_ISLNK(st.st_mode):
            target = _readlink(pfd, base)
            return None if target == ours else f"a symlink to {target!r}"
        if st.st_nlink > 1:
            return f"a file with {st.st_nlink} hard links"
        return None

    def _note_replaced(self, name: str, planted: str | None) -> None:
        """Log and count a planted link the rename replaced (it was never followed)."""
        if planted is None:
            return
        self.links_replaced += 1
        path = self._path(name)
        log.warning("replaced %s at %s that spiffe-bridge did not create; it was not followed", planted, path)

    # -- symlink layout -------------------------------------------------------------------

    def _current_version(self, dfd: int) -> str | None:
        st = _lstat(dfd, DATA_LINK)
        if st is None:
            return None
        if not stat.S_ISLNK(st.st_mode):
            raise WriteError(self._path(DATA_LINK), "exists but is not a symlink; refusing", errno.EEXIST)
        target = _readlink(dfd, DATA_LINK) or ""
        if not _VERSION_RE.match(target):
            raise WriteError(
                self._path(DATA_LINK),
                f"points at {target!r}, not a version dir; refusing",
                errno.EEXIST,
            )
        vst = _lstat(dfd, target)
        return target if vst is not None and stat.S_ISDIR(vst.st_mode) else None

    def _version_names(self, dfd: int, version: str) -> set[str]:
        names: set[str] = set()
        for dirpath, _dirs, files, _fd in os.fwalk(version, dir_fd=dfd):  # never follows a link
            rel = os.path.relpath(dirpath, version)
            names.update(f if rel == "." else f"{rel}/{f}" for f in files)
        return names

    def _write_symlink(self, dfd: int, specs: list[FileSpec]) -> WriteResult:
        current = self._current_version(dfd)
        tops = _tops(specs)
        for top in tops:
            self._check_target(dfd, top)
        changed = [s for s in specs if current is None or not self._same_at(dfd, f"{current}/{s.name}", s)]
        same_set = current is not None and self._version_names(dfd, current) == {s.name for s in specs}
        links_ok = all(self._is_our_link(dfd, top) for top in tops)
        stale = self._stale_entries(dfd, tops)
        if not changed and same_set and links_ok and not stale:
            return WriteResult(False, ())
        if not changed and same_set:
            repaired = self._link_and_clean(dfd, tops, stale)
            return WriteResult(True, tuple(self._path(t) for t in repaired))
        new = self._make_version(dfd, specs)
        try:
            self._swap(dfd, new)
        except OSError as exc:
            shutil.rmtree(new, dir_fd=dfd, ignore_errors=True)
            raise _oserror(self._path(DATA_LINK), exc, "switching to the new version: ") from None
        try:
            self._link_and_clean(dfd, tops, stale)
        except OSError as exc:
            raise _oserror(str(self.directory), exc, "creating visible links: ") from None
        keep = {new} | ({current} if current and self.keep_versions > 1 else set())
        if _DEFER_SYNC.get():
            self._unpruned = keep  # unlinking old versions is slow too: sync() does it
        else:
            self._prune(dfd, keep)
        return WriteResult(True, tuple(self._path(s.name) for s in changed))

    def _same_at(self, dfd: int, name: str, spec: FileSpec) -> bool:
        """``_same_file`` for a relative ``name``, never following a link on the way."""
        try:
            pfd, base = _open_parent(dfd, name)
        except OSError:
            return False
        try:
            return _same_file(pfd, base, spec, self.uid, self.gid)
        finally:
            os.close(pfd)

    def _stale_entries(self, dfd: int, tops: list[str]) -> list[str]:
        """Our links not in the new set, plus files listed by an earlier flat-layout write.

        Computed before the swap: once ``..data`` exists the manifest is no longer read.
        """
        keep = set(tops)
        links = [e for e in os.listdir(dfd) if e not in keep and self._is_our_link(dfd, e)]
        return (
            links
            + [n for n in self._manifest(dfd) if n.split("/")[0] not in keep]
            + ([MANIFEST] if _lstat(dfd, MANIFEST) else [])
        )

    def _make_version(self, dfd: int, specs: list[FileSpec]) -> str:
        now = time.time_ns()
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(now // 1_000_000_000))
        name = f"..{stamp}.{now % 1_000_000_000:09d}_{secrets.token_hex(4)}"
        try:
            os.mkdir(name, 0o700, dir_fd=dfd)
        except OSError as exc:
            raise _oserror(self._path(name), exc, "creating the version directory: ") from None
        current = self._path(name)
        try:
            vfd = os.open(name, _OPEN_DIR | os.O_NOFOLLOW, dir_fd=dfd)
            try:
                subdirs: set[tuple[str, ...]] = set()
                for spec in specs:
                    current = self._path(f"{name}/{spec.name}")
                    *parents, base = spec.name.split("/")
                    pfd = _open_subdir(vfd, parents, create=True)
                    try:
                        _write_new(pfd, base, spec, self.uid, self.gid)
                    finally:
                        os.close(pfd)
                    if parents:
                        subdirs.add(tuple(parents))
                # Each directory is synced once, after all its entries exist (an fsync per
                # file was most of a rotation's cost on a busy disk).
                for parents_key in subdirs:
                    pfd = _open_subdir(vfd, parents_key, create=False)
                    try:
                        _fsync_dir(pfd)
                    finally:
                        os.close(pfd)
                current = self._path(name)
                os.fchmod(vfd, _DIR_MODE)
                _fsync_dir(vfd)
            finally:
                os.close(vfd)
        except OSError as exc:
            shutil.rmtree(name, dir_fd=dfd, ignore_errors=True)
            raise _oserror(current, exc) from None
        return name

    def _swap(self, dfd: int, version: str) -> None:
        tmp = f"{DATA_LINK}_tmp.{secrets.token_hex(8)}"
        os.symlink(version, tmp, dir_fd=dfd)
        try:
            os.rename(tmp, DATA_LINK, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError:
            _unlink_quiet(dfd, tmp)
            raise
        _fsync_dir(dfd)

    def _link_and_clean(self, dfd: int, tops: list[str], stale: list[str]) -> list[str]:
        """Point every visible name at ``..data``; drop the ``stale`` links and flat files."""
        made = []
        for top in tops:
            if self._is_our_link(dfd, top):
                continue
            planted = self._planted(dfd, top, f"{DATA_LINK}/{top}")
            tmp = f"..link_tmp.{secrets.token_hex(8)}"
            os.symlink(f"{DATA_LINK}/{top}", tmp, dir_fd=dfd)
            try:
                os.rename(tmp, top, src_dir_fd=dfd, dst_dir_fd=dfd)
            except OSError:
                _unlink_quiet(dfd, tmp)
                raise
            self._note_replaced(top, planted)
            made.append(top)
        for entry in stale:
            _remove_under(dfd, entry)
        if made or stale:  # otherwise nothing changed here since the swap's own fsync
            _fsync_dir(dfd)
        return made

    def _prune(self, dfd: int, keep: set[str]) -> None:
        """Delete old version directories beyond ``keep_versions`` (never one in ``keep``)."""
        versions = sorted((e for e in os.listdir(dfd) if _VERSION_RE.match(e)), reverse=True)
        budget = self.keep_versions - len(keep) if keep else 0
        for entry in versions:
            if entry in keep:
                continue
            if budget > 0:
                budget -= 1
                continue
            try:
                shutil.rmtree(entry, dir_fd=dfd)
            except OSError as exc:
                log.warning("could not prune old version %s: %s", self._path(entry), exc.strerror)

    def _drop_data_link(self, dfd: int) -> None:
        st = _lstat(dfd, DATA_LINK)
        if st is not None and stat.S_ISLNK(st.st_mode):
            os.unlink(DATA_LINK, dir_fd=dfd)

    def _remove_links(self, dfd: int, keep: set[str]) -> None:
        for entry in os.listdir(dfd):
            if entry not in keep and self._is_our_link(dfd, entry):
                os.unlink(entry, dir_fd=dfd)

    # -- flat layout ----------------------------------------------------------------------

    def _manifest(self, dfd: int) -> list[str]:
        """Names an earlier flat-layout write left here; none while a symlink-layout set is in place.

        The file may be planted: its names are only ever removed with :func:`_remove_under`.
        """
        if _lstat(dfd, DATA_LINK) is not None:
            return []
        try:
            fd = os.open(MANIFEST, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except OSError:
            return []
        try:
            with os.fdopen(fd, "rb") as fh:
                names = json.loads(fh.read(1 << 20))
        except (OSError, ValueError):
            return []
        out = []
        for name in names if isinstance(names, list) else []:
            try:
                _check_name(name)
            except (ValueError, TypeError, AttributeError):
                continue
            out.append(name)
        return out

    def _check_flat_targets(self, dfd: int, specs: list[FileSpec]) -> list[str]:
        """Refuse what a flat write cannot replace; return planted symlinks where a directory belongs."""
        dir_links: list[str] = []
        for spec in specs:
            *parents, _ = spec.name.split("/")
            for i in range(len(parents)):
                sub = "/".join(parents[: i + 1])
                st = _lstat(dfd, sub)  # the parts before ``sub`` are real directories
                if st is None or stat.S_ISDIR(st.st_mode):
                    continue
                if i == 0 and self._is_our_link(dfd, sub):
                    hint = "left by the symlink layout; remove() the set before switching to flat"
                    raise WriteError(self._path(sub), hint, errno.ENOTDIR)
                if not stat.S_ISLNK(st.st_mode):
                    raise WriteError(self._path(sub), "expected a directory; remove it", errno.ENOTDIR)
                if sub not in dir_links:
                    dir_links.append(sub)
                break
            else:
                self._check_target(dfd, spec.name)
        return dir_links

    def _unplant(self, dfd: int, name: str) -> None:
        """Unlink the planted symlink ``name`` (never following it) so a directory can take its place."""
        pfd, base = _open_parent(dfd, name)
        try:
            st = _lstat(pfd, base)
            if st is not None and stat.S_ISLNK(st.st_mode):
                planted = self._planted(pfd, base, None)
                os.unlink(base, dir_fd=pfd)
                self._note_replaced(name, planted)
        finally:
            os.close(pfd)

    def _write_flat(self, dfd: int, specs: list[FileSpec]) -> WriteResult:
        dir_links = self._check_flat_targets(dfd, specs)
        names = {s.name for s in specs}
        previous = self._manifest(dfd)
        changed = [s for s in specs if not self._same_at(dfd, s.name, s)]
        stale = sorted((set(previous) | self._flat_names) - names)
        leftovers = _lstat(dfd, DATA_LINK) is not None
        if not changed and not stale and not leftovers:
            if sorted(previous) != sorted(names):
                self._store_manifest(dfd, names)
            self._flat_names = frozenset(names)
            return WriteResult(False, ())
        staged: list[tuple[int, str, str, str]] = []  # (parent fd, temp, final base, visible path)
        try:
            try:
                for sub in dir_links:  # the files below them are all in ``changed``
                    self._unplant(dfd, sub)
                for spec in changed:
                    *parents, base = spec.name.split("/")
                    pfd = _open_subdir(dfd, parents, create=True)
                    tmp = f".{base}.{secrets.token_hex(8)}.tmp"
                    staged.append((pfd, tmp, base, self._path(spec.name)))
                    _write_new(pfd, tmp, spec, self.uid, self.gid)
            except OSError as exc:
                path = staged[-1][3] if staged else str(self.directory)
                for pfd, tmp, _, _ in staged:
                    _unlink_quiet(pfd, tmp)
                raise _oserror(path, exc, "previous files unchanged: ") from None
            for i, (pfd, tmp, base, path) in enumerate(staged):
                rel = os.path.relpath(path, self.directory)
                planted = self._planted(pfd, base, None if "/" in rel else f"{DATA_LINK}/{rel}")
                try:
                    os.rename(tmp, base, src_dir_fd=pfd, dst_dir_fd=pfd)
                except OSError as exc:
                    for pfd2, tmp2, _, _ in staged[i:]:
                        _unlink_quiet(pfd2, tmp2)
                    raise _oserror(path, exc, "set partly replaced: ") from None
                self._note_replaced(rel, planted)
            synced: set[tuple[int, int]] = set()
            for pfd, _, _, _ in staged:  # once per directory; the top one is synced below
                st = os.fstat(pfd)
                if (st.st_dev, st.st_ino) not in synced and not os.path.samestat(st, os.fstat(dfd)):
                    synced.add((st.st_dev, st.st_ino))
                    _fsync_dir(pfd)
        finally:
            for pfd, _, _, _ in staged:
                os.close(pfd)
        try:
            for name in stale:
                _remove_under(dfd, name)
            self._write_manifest(dfd, sorted(names))
            if leftovers:  # switching from the symlink layout
                self._remove_links(dfd, keep=set())
                self._drop_data_link(dfd)
                self._prune(dfd, keep=set())
            _fsync_dir(dfd)
        except OSError as exc:
            raise _oserror(self._path(MANIFEST), exc) from None
        self._flat_names = frozenset(names)
        return WriteResult(True, tuple(path for _, _, _, path in staged))

    def _store_manifest(self, dfd: int, names: set[str]) -> None:
        try:
            self._write_manifest(dfd, sorted(names))
            _fsync_dir(dfd)
        except OSError as exc:
            raise _oserror(self._path(MANIFEST), exc) from None

    def _write_manifest(self, dfd: int, names: list[str]) -> None:
        spec = FileSpec("manifest", json.dumps(names).encode(), 0o644)
        if _same_file(dfd, MANIFEST, spec, None, None):
            return
        tmp = f"{MANIFEST}.{secrets.token_hex(8)}.tmp"
        _write_new(dfd, tmp, spec, None, None)
        os.rename(tmp, MANIFEST, src_dir_fd=dfd, dst_dir_fd=dfd)

    def _remove_flat_files(self, dfd: int, keep: set[str]) -> None:
        for name in sorted(set(self._manifest(dfd)) | self._flat_names):
            if name not in keep:
                _remove_under(dfd, name)
        self._flat_names = frozenset()
        if _lstat(dfd, MANIFEST) is not None:
            os.unlink(MANIFEST, dir_fd=dfd)


def current_version_dir(directory: str | os.PathLike[str]) -> Path | None:
    """The version directory ``..data`` points at now (symlink layout), or None."""
    target = _readlink_path(Path(directory) / DATA_LINK)
    if target is None or not _VERSION_RE.match(target):
        return None
    return Path(directory) / target


def _readlink_path(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def read_current(
    directory: str | os.PathLike[str], names: Sequence[str], attempts: int = 5
) -> dict[str, bytes]:
    """Read ``names`` as one coherent set: pin ``..data`` once, then read every file from it.

    In the flat layout (no ``..data``) the files are read one by one, without that
    guarantee. Retries when the pinned version is pruned mid-read.
    """
    base = Path(directory)
    for attempt in range(attempts):
        try:
            dfd = os.open(base / DATA_LINK, _OPEN_DIR)
        except FileNotFoundError:
            return {n: (base / n).read_bytes() for n in names}
        try:
            return {n: _read_at(dfd, n) for n in names}
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
        finally:
            os.close(dfd)
    raise AssertionError("unreachable")


def _read_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def iter_versions(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Version directories present in ``directory``, newest first (for tests and diagnostics)."""
    base = Path(directory)
    for entry in sorted((e for e in os.listdir(base) if _VERSION_RE.match(e)), reverse=True):
        yield base / entry
