"""The JWT side of the daemon as tasks on its event loop: the bundle stream and one refresher per token.

:func:`keep_fresh` is the refresh loop itself, shared with broker mode's workload tokens.

Each configured JWT-SVID is fetched with the shared
:class:`~spiffe_bridge.client.aio.AsyncWorkloadClient`, handed over, and fetched
again once half its lifetime has passed, so the file on disk is replaced well
before the token expires (as spiffe-helper does). Failures retry after 1 s,
doubling up to 60 s. The JWT bundle stream feeds a
:class:`~spiffe_bridge.sources.state.SourceState`, so health, metrics and the
identity-lost policy see it exactly like the X.509 stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from spiffe_bridge.client.aio import AsyncWorkloadClient
from spiffe_bridge.errors import SpiffeBridgeError, WorkloadApiError
from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.sidecar.config import JwtSvidConfig
from spiffe_bridge.sources.state import SourceState

log = logging.getLogger("spiffe_bridge.sidecar.jwt")

RETRY_INITIAL = 1.0
RETRY_MAX = 60.0
#: Seconds one FetchJWTSVID call may take before it counts as failed and is retried.
FETCH_TIMEOUT = 30.0


def refresh_delay(svid: JwtSvid, now: float | None = None) -> float:
    """Seconds until half of the token's lifetime (from issue, else from now) has passed."""
    now = time.time() if now is None else now
    issued = svid.issued_at or now
    return max(issued + (svid.expiry - issued) / 2 - now, 0.0) + 0.05


async def watch_bundles(
    client: AsyncWorkloadClient, state: SourceState[JwtBundleSet], deliver: Callable[[JwtBundleSet], None]
) -> None:
    """Offer every JWT bundle set to ``state``; ``deliver`` the changed ones (runs until cancelled)."""
    try:
        async for bundles in client.watch_jwt_bundles(on_error=state.on_error):
            if state.offer(bundles):
                deliver(bundles)
    except WorkloadApiError as exc:
        state.fail(exc)


async def refresh_token(
    client: AsyncWorkloadClient,
    spec: JwtSvidConfig,
    hint: str | None,
    deliver: Callable[[JwtSvidConfig, JwtSvid], None],
) -> None:
    """Keep the token of one ``jwt_svids`` entry fresh (runs until cancelled)."""

    async def fetch() -> JwtSvid:
        return await client.fetch_jwt_svid(
            spec.audience, *spec.extra_audiences, hint=hint, timeout=FETCH_TIMEOUT
        )

    await keep_fresh(fetch, spec, deliver)


async def keep_fresh(
    fetch: Callable[[], Awaitable[JwtSvid]],
    spec: JwtSvidConfig,
    deliver: Callable[[JwtSvidConfig, JwtSvid], None],
    what: str = "JWT-SVID",
    on_error: Callable[[Exception], None] | None = None,
) -> None:
    """Fetch the token of ``spec`` and again at each half-life, delivering new ones (until cancelled).

    ``fetch`` mints it (the bridge's own through the Workload API, a workload's through the
    Broker API); a failure is logged with ``what``, told to ``on_error``, and retried with a
    doubling delay.
    """
    retry = RETRY_INITIAL
    last_token = ""
    while True:
        try:
            svid = await fetch()
        except (SpiffeBridgeError, LookupError, ValueError) as exc:
            log.warning("%s for audience %r: %s (retry in %.0fs)", what, spec.audience, exc, retry)
            if on_error is not None:
                on_error(exc)
            await asyncio.sleep(retry)
            retry = min(retry * 2, RETRY_MAX)
            continue
        retry = RETRY_INITIAL
        if svid.token != last_token:
            last_token = svid.token
            deliver(spec, svid)
        await asyncio.sleep(refresh_delay(svid))
