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
or special file (FIFO, socket, device) planted at a visible name (or a symlink where a
flat-layout subdirectory belongs) is replaced, never followed or opened, logged at WARNING
and counted in :attr:`FileSetWriter.links_replaced`; a directory there is refused with
:class:`WriteError`. The previous set stays intact on every failure. One writer per
directory (the sidecar's wiring guarantees it).

Modules: :mod:`.spec` (the set, results, errors), :mod:`.names` (valid and reserved
names), :mod:`._safeio` (opens, writes, removals and fsyncs that follow no link),
:mod:`.symlink` and :mod:`.flat` (the layouts), :mod:`.cleanup` (pruning, switching
layouts, ``remove``), :mod:`.writer` (:class:`FileSetWriter`), :mod:`.read` (readers).
"""

from __future__ import annotations

from spiffe_bridge.fileset.names import DATA_LINK, MANIFEST
from spiffe_bridge.fileset.read import current_version_dir, iter_versions, read_current
from spiffe_bridge.fileset.spec import FileSpec, Layout, WriteError, WriteResult
from spiffe_bridge.fileset.writer import FileSetWriter

__all__ = [
    "DATA_LINK",
    "MANIFEST",
    "FileSetWriter",
    "FileSpec",
    "Layout",
    "WriteError",
    "WriteResult",
    "current_version_dir",
    "iter_versions",
    "read_current",
]
