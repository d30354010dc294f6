"""The open output directory as both layouts see it during one write or remove.

It carries what every step needs (the directory fd, its path for messages, the owner
for new files) and the checks both layouts make before a rename replaces a visible
name: what is in the way, and whether we put it there.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from spiffe_bridge.fileset import _safeio as io
from spiffe_bridge.fileset.names import DATA_LINK
from spiffe_bridge.fileset.spec import FileSpec, WriteError

log = logging.getLogger("spiffe_bridge.fileset")  # one logger for the package


class OutputDir:
    """One operation's view of the output directory; the writer keeps what outlives it.

    ``links_replaced`` counts this operation's replaced links; ``flat_names`` starts as
    the writer's last flat-layout set and is what the writer keeps afterwards.
    """

    def __init__(
        self,
        fd: int,
        directory: Path,
        *,
        uid: int | None,
        gid: int | None,
        keep_versions: int,
        flat_names: frozenset[str],
    ) -> None:
        self.fd = fd
        self.directory = directory
        self.uid = uid
        self.gid = gid
        self.keep_versions = keep_versions
        #: Names of this writer's last flat-layout set: removed later even if the manifest was replaced.
        self.flat_names = flat_names
        self.links_replaced = 0
        #: Versions to keep when a deferred write's pruning runs later (``FileSetWriter.sync``).
        self.unpruned: set[str] | None = None

    def path(self, name: str) -> str:
        """The full path of relative ``name``, for messages."""
        return os.path.join(self.directory, name)

    def same_at(self, name: str, spec: FileSpec) -> bool:
        """``same_file`` for a relative ``name``, never following a link on the way."""
        try:
            pfd, base = io.open_parent(self.fd, name)
        except OSError:
            return False
        try:
            return io.same_file(pfd, base, spec, self.uid, self.gid)
        finally:
            os.close(pfd)

    def is_our_link(self, name: str) -> bool:
        """Whether the top-level ``name`` is the visible link the symlink layout makes."""
        return io.readlink(self.fd, name) == f"{DATA_LINK}/{name}"

    def check_target(self, name: str) -> None:
        """Refuse a directory at a visible name; links and special files there get replaced.

        A rename over a FIFO, socket or device node opens nothing, so replacing one is as safe
        as replacing a link; refusing it would let whoever planted it stop every write.
        """
        try:
            pfd, base = io.open_parent(self.fd, name)
        except OSError:
            return  # no parent yet (or not a directory): creating it reports the problem
        try:
            st = io.lstat(pfd, base)
        finally:
            os.close(pfd)
        if st is None or stat.S_ISLNK(st.st_mode):
            return
        if stat.S_ISDIR(st.st_mode):
            raise WriteError(self.path(name), "a directory is in the way; remove it", errno.EISDIR)

    def note_replaced(self, name: str, planted: str | None) -> None:
        """Log and count a planted link or special file the rename replaced (never followed or opened)."""
        if planted is None:
            return
        self.links_replaced += 1
        path = self.path(name)
        log.warning(
            "replaced %s at %s that spiffe-bridge did not create; it was neither followed nor opened",
            planted,
            path,
        )


#: How a replaced special file is named in the warning.
_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def planted(pfd: int, base: str, ours: str | None) -> str | None:
    """What a rename is about to replace at ``base`` if we did not put it there, else None.

    ``ours`` is the link target this writer itself creates at that name, if any.
    """
    st = io.lstat(pfd, base)
    if st is None:
        return None
    if stat.S_ISLNK(st.st_mode):
        target = io.readlink(pfd, base)
        return None if target == ours else f"a symlink to {target!r}"
    if not stat.S_ISREG(st.st_mode):
        return f"a {_KINDS.get(stat.S_IFMT(st.st_mode), 'special file')}"
    if st.st_nlink > 1:
        return f"a file with {st.st_nlink} hard links"
    return None
