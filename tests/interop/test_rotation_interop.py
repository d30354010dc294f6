"""Rotation through the real agent: SPIRE re-issues each X.509-SVID at half its TTL and
pushes it on the open stream; X509Source and AsyncX509Source must pick it up without
reconnecting.

Both sources watch at the same time so the suite waits for one rotation window only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from spire import SpireDeployment

from spiffe_bridge import AsyncX509Source, SourceStatus, X509Context, X509Source

pytest_plugins = ("interop_support",)

#: SPIRE's agent checks for due rotations on its sync interval (1 s here); allow a few.
MARGIN = 10.0


def serials(ctx: X509Context) -> dict[str, int]:
    return {str(s.spiffe_id): s.leaf.serial_number for s in ctx.svids}


def all_rotated(first: dict[str, int]) -> object:
    def check(ctx: X509Context) -> bool:
        now = serials(ctx)
        return set(now) == set(first) and all(now[sid] != first[sid] for sid in first)

    return check


async def test_sync_and_async_sources_see_every_svid_rotate_within_half_ttl(spire: SpireDeployment) -> None:
    deadline = spire.svid_ttl / 2 + MARGIN
    hints = {e.spiffe_id: e.hint for e in spire.entries}
    with X509Source(spire.workload_api_address, timeout=15) as sync_source:
        async with AsyncX509Source(spire.workload_api_address, timeout=15) as async_source:
            started = time.monotonic()
            sync_first = serials(sync_source.context)
            async_first = serials(async_source.context)
            assert set(sync_first) == set(async_first) == spire.expected_spiffe_ids

            sync_rotated, async_rotated = await asyncio.gather(
                asyncio.to_thread(sync_source.wait_for, all_rotated(sync_first), deadline),
                asyncio.wait_for(async_source.wait_for(all_rotated(async_first)), deadline),
            )
            elapsed = time.monotonic() - started

            assert elapsed <= deadline
            for source, first, rotated in (
                (sync_source, sync_first, sync_rotated),
                (async_source, async_first, async_rotated),
            ):
                # pushed on the stream that was already open: no reconnect happened
                assert source.status is SourceStatus.READY
                assert source.state.reconnects == 0 and source.state.rejected == 0
                assert source.state.updates >= 2
                now = dt.datetime.now(dt.UTC)
                for svid in rotated.svids:
                    assert svid.hint == hints[str(svid.spiffe_id)]
                    # a fresh SVID: most of its TTL is still ahead
                    assert (svid.expires_at - now).total_seconds() > spire.svid_ttl / 2 - MARGIN
                    assert svid.leaf.serial_number != first[str(svid.spiffe_id)]
