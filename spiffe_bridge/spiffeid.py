"""SPIFFE IDs and trust domains, parsed strictly like go-spiffe (no normalisation).

Our own small types rather than py-spiffe's: importing ``spiffe`` costs ~0.5 s
(it loads gRPC, JWT and ASN.1 stacks), which the sidecar's start-up cannot
afford. ``to_pyspiffe()`` converts when interoperating.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from spiffe_bridge.errors import SpiffeIdError

_SCHEME = "spiffe://"
_TD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._")
_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
MAX_ID_LENGTH = 2048
MAX_TD_LENGTH = 255


def _check_td_name(name: str, original: str) -> None:
    if not name:
        raise SpiffeIdError(f"trust domain is missing in {original!r}")
    if len(name) > MAX_TD_LENGTH:
        raise SpiffeIdError(f"trust domain longer than {MAX_TD_LENGTH} bytes in {original!r}")
    bad = set(name) - _TD_CHARS
    if bad:
        raise SpiffeIdError(
            f"trust domain in {original!r} has characters {''.join(sorted(bad))!r}; "
            "only lowercase letters, digits, '.', '-' and '_' are allowed"
        )


@dataclass(frozen=True, slots=True, order=True)
class TrustDomain:
    """A trust domain name such as ``example.org``."""

    name: str

    def __post_init__(self) -> None:
        _check_td_name(self.name, self.name)

    @classmethod
    def parse(cls, value: str) -> TrustDomain:
        """Accept ``example.org`` or ``spiffe://example.org`` (as go-spiffe does)."""
        if "://" in value:
            spiffe_id = SpiffeId.parse(value)
            if spiffe_id.path:
                raise SpiffeIdError(f"trust domain ID {value!r} must not have a path")
            return spiffe_id.trust_domain
        return cls(value)

    @property
    def id_string(self) -> str:
        """The trust domain as a SPIFFE ID (``spiffe://example.org``), the Workload API map key."""
        return _SCHEME + self.name

    def __str__(self) -> str:
        return self.name

    def to_pyspiffe(self) -> Any:
        """Convert to py-spiffe's ``TrustDomain`` (imports py-spiffe)."""
        from spiffe import TrustDomain as PyTrustDomain

        return PyTrustDomain(self.name)


@dataclass(frozen=True, slots=True, order=True)
class SpiffeId:
    """A SPIFFE ID: ``spiffe://<trust-domain>[/<path>]``."""

    trust_domain: TrustDomain
    path: str = ""

    @classmethod
    def parse(cls, value: str) -> SpiffeId:
        """Parse and validate per SPIFFE-ID.md §2; raise SpiffeIdError saying why."""
        if not isinstance(value, str):
            raise SpiffeIdError("SPIFFE ID must be a string")
        return _parse_id(value)

    def is_member_of(self, trust_domain: TrustDomain) -> bool:
        """True when this ID belongs to ``trust_domain``."""
        return self.trust_domain == trust_domain

    def __str__(self) -> str:
        return _SCHEME + self.trust_domain.name + self.path

    def to_pyspiffe(self) -> Any:
        """Convert to py-spiffe's ``SpiffeId`` (imports py-spiffe)."""
        from spiffe import SpiffeId as PySpiffeId

        return PySpiffeId(str(self))


@functools.lru_cache(maxsize=1024)
def _parse_id(value: str) -> SpiffeId:
    """SpiffeId.parse's work, memoised: every update repeats the same few IDs (errors are not cached)."""
    if len(value.encode()) > MAX_ID_LENGTH:
        raise SpiffeIdError(f"SPIFFE ID longer than {MAX_ID_LENGTH} bytes")
    if not value.startswith(_SCHEME):
        raise SpiffeIdError(f"SPIFFE ID {value!r} must start with 'spiffe://'")
    td_name, slash, path = value[len(_SCHEME) :].partition("/")
    _check_td_name(td_name, value)
    if slash:
        path = "/" + path
        _check_path(path, value)
    return SpiffeId(TrustDomain(td_name), path)


def _check_path(path: str, original: str) -> None:
    if path == "/":
        raise SpiffeIdError(f"SPIFFE ID {original!r} has a trailing '/'")
    for segment in path[1:].split("/"):
        if not segment:
            raise SpiffeIdError(f"SPIFFE ID {original!r} has an empty path segment or trailing '/'")
        if segment in (".", ".."):
            raise SpiffeIdError(f"SPIFFE ID {original!r} has a '.' or '..' path segment")
        bad = set(segment) - _PATH_CHARS
        if bad:
            raise SpiffeIdError(
                f"SPIFFE ID {original!r} has characters {''.join(sorted(bad))!r} in its path; "
                "only letters, digits, '.', '-' and '_' are allowed"
            )
