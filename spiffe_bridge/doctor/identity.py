"""Who is this process to a SPIRE agent? The unix workload attestor's selectors for it.

SPIRE's ``unix`` WorkloadAttestor derives ``unix:uid``, ``unix:user``, ``unix:gid``,
``unix:group`` and ``unix:supplementary_gid``/``unix:supplementary_group`` always,
and ``unix:path``/``unix:sha256`` of the executable only when the plugin is
configured with ``discover_workload_path = true``. A PermissionDenied from the
agent means no registration entry matches these; showing them lets the operator
write the missing entry.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
from dataclasses import dataclass

#: Do not hash huge executables (the agent's ``workload_size_limit`` exists for the same reason).
MAX_HASH_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class ProcessIdentity:
    """What the agent's attestor sees of this process."""

    uid: int
    gid: int
    supplementary_gids: tuple[int, ...]
    exe: str

    @classmethod
    def current(cls) -> ProcessIdentity:
        """This process (effective ids, as the kernel reports them to the agent over SO_PEERCRED)."""
        try:
            exe = os.readlink("/proc/self/exe")
        except OSError:
            exe = ""
        gid = os.getegid()
        extra = tuple(sorted(g for g in set(os.getgroups()) if g != gid))
        return cls(os.geteuid(), gid, extra, exe)


def _user(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def sha256_file(path: str) -> str | None:
    """Hex SHA-256 of a file, or None when unreadable or too big."""
    try:
        if os.path.getsize(path) > MAX_HASH_BYTES:
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def selectors(ident: ProcessIdentity) -> list[str]:
    """The selectors the unix attestor derives without ``discover_workload_path``."""
    out = [f"unix:uid:{ident.uid}"]
    user = _user(ident.uid)
    if user:
        out.append(f"unix:user:{user}")
    out.append(f"unix:gid:{ident.gid}")
    group = _group(ident.gid)
    if group:
        out.append(f"unix:group:{group}")
    for gid in ident.supplementary_gids:
        out.append(f"unix:supplementary_gid:{gid}")
        name = _group(gid)
        if name:
            out.append(f"unix:supplementary_group:{name}")
    return out


def path_selectors(ident: ProcessIdentity) -> list[str]:
    """The extra selectors with ``discover_workload_path = true`` (path and, if hashable, sha256)."""
    if not ident.exe:
        return []
    out = [f"unix:path:{ident.exe}"]
    digest = sha256_file(ident.exe)
    if digest:
        out.append(f"unix:sha256:{digest}")
    return out


def permission_denied_help(ident: ProcessIdentity | None = None) -> tuple[str, str]:
    """(detail, fix) for a PermissionDenied: who we are and the entry that would match."""
    ident = ident or ProcessIdentity.current()
    sels = selectors(ident)
    detail = (
        f"the agent has no registration entry for this process (uid {ident.uid}, gid {ident.gid}, "
        f"exe {ident.exe or '?'}); unix attestor selectors: {' '.join(sels)}"
    )
    extra = path_selectors(ident)
    if extra:
        detail += f"; only with discover_workload_path = true also: {' '.join(extra)}"
    fix = (
        "create an entry matching them, e.g. spire-server entry create -parentID <agent SPIFFE ID> "
        f"-spiffeID spiffe://<trust domain>/<workload> -selector {sels[0]}"
    )
    return detail, fix
