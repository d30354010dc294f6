"""Old home of the sync sources, kept for importers: see ``spiffe_bridge.sources``."""

from __future__ import annotations

from spiffe_bridge.sources.sync import JWTSource, JwtSource, X509BundleSource, X509Source

__all__ = ["JWTSource", "JwtSource", "X509BundleSource", "X509Source"]
