"""Which SVIDs a downstream may see: allow-lists of SPIFFE IDs and hints.

A relay in front of a proxy should hand it only the proxy's own identity, so
the filter keeps an SVID when its SPIFFE ID *or* its hint is allowed (the
union of both lists). An empty filter lets everything through. It works on
the Workload API messages themselves (X.509 and JWT-SVID responses alike),
so a response it leaves whole is re-served as the agent's own bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.errors import SpiffeIdError
from spiffe_bridge.loglist import capped
from spiffe_bridge.spiffeid import SpiffeId


@dataclass(frozen=True, slots=True)
class SvidFilter:
    """Allow-lists of SPIFFE IDs and hints; an SVID passes if either list allows it."""

    ids: frozenset[str] = frozenset()
    hints: frozenset[str] = frozenset()

    @classmethod
    def of(cls, ids: Iterable[str] = (), hints: Iterable[str] = ()) -> SvidFilter:
        """Build a filter; every ID must be a valid SPIFFE ID (ValueError says which is not)."""
        checked = set()
        for value in ids:
            try:
                checked.add(str(SpiffeId.parse(value)))
            except SpiffeIdError as exc:
                raise ValueError(f"allowed SPIFFE ID {value!r}: {exc}") from None
        wanted_hints = set(hints)
        if "" in wanted_hints:
            raise ValueError("an allowed hint must not be empty")
        return cls(frozenset(checked), frozenset(wanted_hints))

    @property
    def active(self) -> bool:
        """True when the filter restricts anything."""
        return bool(self.ids or self.hints)

    def allows(self, spiffe_id: str, hint: str = "") -> bool:
        """Whether an SVID with this ID and hint may be shown."""
        if not self.active:
            return True
        return spiffe_id in self.ids or (bool(hint) and hint in self.hints)

    def select(self, svids: Iterable[Any]) -> list[Any]:
        """The SVID messages (X509SVID or JWTSVID) this filter allows, in the agent's order."""
        return [s for s in svids if self.allows(s.spiffe_id, s.hint)]

    def filter_x509_response(self, message: Any, data: bytes) -> bytes | None:
        """``data`` (the X509SVIDResponse ``message`` as sent) without the SVIDs not allowed.

        Returns ``data`` itself when nothing is removed and None when nothing is left. The
        first allowed SVID becomes the downstream's default; bundles, federated bundles and
        CRLs are kept as they are.
        """
        if not self.active:
            return data
        allowed = self.select(message.svids)
        if len(allowed) == len(message.svids):
            return data
        if not allowed:
            return None
        response = pb.X509SVIDResponse()
        response.CopyFrom(message)
        del response.svids[:]
        response.svids.extend(allowed)
        return response.SerializeToString(deterministic=True)

    def describe(self) -> str:
        """One line for logs."""
        if not self.active:
            return "all SVIDs"
        parts = [*(f"id={i}" for i in sorted(self.ids)), *(f"hint={h}" for h in sorted(self.hints))]
        return "only " + capped(parts)
