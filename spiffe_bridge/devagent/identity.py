"""SPIFFE IDs and the identities the dev agent issues SVIDs for.

Validation follows SPIFFE-ID.md §2 strictly (like go-spiffe): nothing is
normalised, so a test that feeds a bad ID learns about it at configuration
time instead of through a confusing client-side parse error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_TD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_PATH_CHARS = _TD_CHARS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SCHEME = "spiffe://"
MAX_HINT_BYTES = 1024


def trust_domain_name(value: str) -> str:
    """Return the bare trust domain name of ``example.org`` or ``spiffe://example.org``."""
    name = value[len(_SCHEME) :] if value.startswith(_SCHEME) else value
    if not name:
        raise ValueError("trust domain is empty")
    if len(name.encode()) > 255:
        raise ValueError("trust domain is longer than 255 bytes")
    bad = set(name) - _TD_CHARS
    if bad:
        raise ValueError(f"trust domain {name!r} has invalid characters {sorted(bad)}")
    return name


def split_spiffe_id(value: str) -> tuple[str, str]:
    """Split a SPIFFE ID into (trust domain, path); the path may be empty."""
    if not value.startswith(_SCHEME):
        raise ValueError(f"{value!r} is not a spiffe:// URI")
    if len(value.encode()) > 2048:
        raise ValueError("SPIFFE ID is longer than 2048 bytes")
    rest = value[len(_SCHEME) :]
    td, slash, path = rest.partition("/")
    td = trust_domain_name(td)
    if not slash:
        return td, ""
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"{value!r} has an empty, '.' or '..' path segment")
        bad = set(segment) - _PATH_CHARS
        if bad:
            raise ValueError(f"{value!r} has invalid path characters {sorted(bad)}")
    return td, "/" + path


@dataclass(frozen=True)
class Identity:
    """A workload identity: SPIFFE ID (with a non-root path), optional hint and DNS SANs."""

    spiffe_id: str
    hint: str = ""
    dns_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        _, path = split_spiffe_id(self.spiffe_id)
        if not path:
            raise ValueError(f"workload SPIFFE ID {self.spiffe_id!r} needs a path")
        if len(self.hint.encode()) > MAX_HINT_BYTES:
            raise ValueError(f"hint longer than {MAX_HINT_BYTES} bytes")
        object.__setattr__(self, "dns_names", tuple(self.dns_names))

    @property
    def trust_domain(self) -> str:
        """Bare trust domain name of the SPIFFE ID."""
        return split_spiffe_id(self.spiffe_id)[0]

    @classmethod
    def parse(cls, spec: str, dns_names: tuple[str, ...] = ()) -> Identity:
        """Parse the CLI form ``spiffe://td/path[#hint]`` (SPIFFE IDs never contain '#')."""
        spiffe_id, _, hint = spec.partition("#")
        return cls(spiffe_id, hint, dns_names)


def as_identity(value: Identity | str) -> Identity:
    """Accept either an Identity or its ``ID[#hint]`` string form."""
    return value if isinstance(value, Identity) else Identity.parse(value)
