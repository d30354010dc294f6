"""The names in an output directory: the ones a set may use and the ones the writer reserves.

Each reserved name is made and recognised here only, so the layouts, the crash sweep
and the readers agree on what is ours. Every reserved name starts with ``.``, which a
:class:`~spiffe_bridge.fileset.FileSpec` name may not, so the two never collide.
"""

from __future__ import annotations

import re
import secrets
import time

#: The symlink naming the current version directory (symlink layout).
DATA_LINK = "..data"
#: Names written by the last flat-layout write, so names dropped from the set get removed.
MANIFEST = ".spiffe-bridge-files.json"

VERSION_RE = re.compile(r"^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d{9}_[0-9a-f]{8}$")
TEMP_RE = re.compile(r"^(\.\.(data|link)_tmp\.[0-9a-f]{16}|\..+\.[0-9a-f]{16}\.tmp)$")
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9_@+=,-][A-Za-z0-9_@+=,. -]*$")  # spaces: legal in spiffe-helper


def check_name(name: str) -> None:
    """Raise ValueError unless ``name`` is a relative path of safe components (see the message)."""
    parts = name.split("/")
    if not name or name.startswith("/") or not all(_COMPONENT_RE.match(p) for p in parts):
        raise ValueError(
            f"invalid file name {name!r}: use relative names of letters, digits, spaces and '._@+=,-', "
            "no empty, '.' or '..' components, nothing starting with '.' or a space"
        )


def names_clash(a: str, b: str) -> bool:
    """Whether two names of one set cannot both exist: the same, or one a directory of the other."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def new_version_name() -> str:
    """A fresh version directory name ``..<UTC timestamp>.<ns>_<random>`` (sorts by time)."""
    now = time.time_ns()
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime(now // 1_000_000_000))
    return f"..{stamp}.{now % 1_000_000_000:09d}_{secrets.token_hex(4)}"


def temp_link_name(kind: str) -> str:
    """A fresh name for a link about to be renamed over ``..data`` (``kind="data"``) or a visible name."""
    return f"..{kind}_tmp.{secrets.token_hex(8)}"


def temp_file_name(base: str) -> str:
    """A fresh hidden name next to ``base`` for its content until the rename makes it visible."""
    return f".{base}.{secrets.token_hex(8)}.tmp"


def temp_manifest_name() -> str:
    """A fresh name for the next manifest until its rename (:data:`MANIFEST` is hidden already)."""
    return f"{MANIFEST}.{secrets.token_hex(8)}.tmp"
