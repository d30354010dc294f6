"""Which SVIDs a downstream may see: allow-lists of SPIFFE IDs and hints.

A relay in front of a proxy should hand it only the proxy's own identity, so
the filter keeps an SVID when its SPIFFE ID *or* its hint is allowed (the
union of both lists). An empty filter lets everything through. The filter
works on the validated model and on JWT-SVID responses alike, so X.509 and
JWT answers are restricted by the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from spiffe_bridge.errors import SpiffeIdError
from spiffe_bridge.model import X509Context, X509Svid
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
                raise ValueError(f"--allow-spiffe-id {value!r}: {exc}") from None
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

    def select(self, context: X509Context) -> tuple[X509Svid, ...]:
        """The context's SVIDs this filter allows, in the agent's order (first = default)."""
        return tuple(s for s in context.svids if self.allows(str(s.spiffe_id), s.hint))

    def describe(self) -> str:
        """One line for logs."""
        if not self.active:
            return "all SVIDs"
        parts = [*(f"id={i}" for i in sorted(self.ids)), *(f"hint={h}" for h in sorted(self.hints))]
        return "only " + ", ".join(parts)
