"""Fetch and watch X.509 SVIDs with the blocking client.

Run against the embedded dev agent:
    spiffe-bridge dev-agent --socket /tmp/sb-demo.sock &
    SPIFFE_ENDPOINT_SOCKET=unix:///tmp/sb-demo.sock python examples/fetch_sync.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from spiffe_bridge import WorkloadClient, X509Context, X509Source


def main(updates: int = 2) -> int:
    """Print the current identity, then the next ``updates`` rotations seen by a source."""
    with WorkloadClient() as client:  # address from SPIFFE_ENDPOINT_SOCKET
        ctx = client.fetch_x509_context(timeout=10)
        for svid in ctx.svids:
            print(f"SVID {svid.spiffe_id} hint={svid.hint!r} expires {svid.expires_at:%Y-%m-%d %H:%M:%S}Z")
        for td, bundle in ctx.bundles.items():
            print(f"bundle {td}: {len(bundle.authorities)} authorities")
        jwt_svid = client.fetch_jwt_svid("example-audience")
        print(f"JWT-SVID for {jwt_svid.spiffe_id}, audience {list(jwt_svid.audience)}")

    with X509Source(timeout=10) as source:
        seen = source.context.digest
        for _ in range(updates):
            ctx = source.wait_for(_changed_from(seen), timeout=120)
            seen = ctx.digest
            print(f"rotated: new serial {ctx.default_svid.leaf.serial_number:x}")
    return 0


def _changed_from(digest: bytes) -> Callable[[X509Context], bool]:
    """A predicate: the context differs from the one with ``digest``."""
    return lambda ctx: ctx.digest != digest


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
