"""Old home of the source state, kept for importers: see ``spiffe_bridge.sources.state``."""

from __future__ import annotations

from spiffe_bridge.sources.reads import X509Reads
from spiffe_bridge.sources.state import SourceState, SourceStatus, T

__all__ = ["SourceState", "SourceStatus", "T", "X509Reads"]
