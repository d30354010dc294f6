"""Watch X.509 SVIDs with the asyncio client and source.

Run against the embedded dev agent:
    spiffe-bridge dev-agent --socket /tmp/sb-demo.sock --rotate-every 5s &
    SPIFFE_ENDPOINT_SOCKET=unix:///tmp/sb-demo.sock python examples/fetch_async.py 2
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from spiffe_bridge import AsyncWorkloadClient, AsyncX509Source, X509Context


async def main(updates: int = 2) -> int:
    """Print the current identity and JWT bundle, then the next ``updates`` rotations."""
    async with AsyncWorkloadClient() as client:
        ctx = await client.fetch_x509_context(timeout=10)
        print(f"default SVID {ctx.default_svid.spiffe_id}, expires {ctx.default_svid.expires_at:%H:%M:%S}Z")
        bundles = await client.fetch_jwt_bundles()
        print(f"JWT bundles for {sorted(td.name for td in bundles.bundles)}")

    async with AsyncX509Source(timeout=10) as source:
        seen = source.context.digest
        for _ in range(updates):
            ctx = await asyncio.wait_for(source.wait_for(_changed_from(seen)), 120)
            seen = ctx.digest
            print(f"rotated: new serial {ctx.default_svid.leaf.serial_number:x}")
    return 0


def _changed_from(digest: bytes) -> Callable[[X509Context], bool]:
    """A predicate: the context differs from the one with ``digest``."""
    return lambda ctx: ctx.digest != digest


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)))
