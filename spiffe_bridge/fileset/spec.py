"""What a file set is (:class:`FileSpec`), how a write reports (:class:`WriteResult`) and fails."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from spiffe_bridge.errors import SpiffeBridgeError
from spiffe_bridge.fileset.names import check_name

#: How a set is laid out on disk: see the package docstring.
Layout = Literal["flat", "symlink"]


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
        check_name(self.name)
        if not isinstance(self.data, bytes):
            raise TypeError(f"FileSpec {self.name!r}: data must be bytes")
        if self.mode & ~0o777:
            raise ValueError(f"FileSpec {self.name!r}: mode {self.mode:#o} has bits beyond 0o777")


@dataclass(frozen=True)
class WriteResult:
    """Whether anything on disk changed, and the visible paths whose content or mode changed."""

    changed: bool
    written: tuple[str, ...] = ()


def check_specs(files: Sequence[FileSpec]) -> list[FileSpec]:
    """The set without exact duplicates; ValueError for an empty set or names that clash."""
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


def oserror(path: str, exc: OSError, what: str = "") -> WriteError:
    """``exc`` as a WriteError at ``path``: ``what`` says which step failed, the errno name why."""
    code = errno.errorcode.get(exc.errno or 0, "")
    reason = f"{what}{exc.strerror or exc}" + (f" [{code}]" if code else "")
    return WriteError(path, reason, exc.errno)
