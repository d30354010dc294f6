"""Old home of AsyncX509Source, kept for importers: see ``spiffe_bridge.sources``."""

from __future__ import annotations

from spiffe_bridge.sources.aio import AsyncX509Source

__all__ = ["AsyncX509Source"]
