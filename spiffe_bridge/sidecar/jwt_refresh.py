"""Keep one configured JWT-SVID fresh: fetch, hand over, sleep until half its lifetime, repeat.

The token is fetched through :class:`~spiffe_bridge.source.JwtSource`, whose
cache holds it until half its lifetime has passed; this thread wakes at that
point, so the file on disk is replaced well before the token expires (as
spiffe-helper does: refresh at half the remaining lifetime). Failures retry
after 1 s, doubling up to 60 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from spiffe_bridge.errors import SpiffeBridgeError
from spiffe_bridge.jwt import JwtSvid
from spiffe_bridge.sidecar.config import JwtSvidConfig
from spiffe_bridge.source import JwtSource

log = logging.getLogger("spiffe_bridge.sidecar.jwt")

RETRY_INITIAL = 1.0
RETRY_MAX = 60.0


def refresh_delay(svid: JwtSvid, now: float | None = None) -> float:
    """Seconds until half of the token's lifetime (from issue, else from now) has passed."""
    now = time.time() if now is None else now
    issued = svid.issued_at or now
    return max(issued + (svid.expiry - issued) / 2 - now, 0.0) + 0.05


class JwtRefresher:
    """A daemon thread that delivers a fresh token for one ``jwt_svids`` entry."""

    def __init__(
        self,
        source: JwtSource,
        spec: JwtSvidConfig,
        hint: str | None,
        deliver: Callable[[JwtSvidConfig, JwtSvid], None],
        stop: threading.Event,
    ) -> None:
        self.source = source
        self.spec = spec
        self.hint = hint
        self.deliver = deliver
        self.stop = stop
        self.last_error: Exception | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"spiffe-bridge-jwt-{spec.file_name}", daemon=True
        )

    def start(self) -> JwtRefresher:
        """Start the refresh loop."""
        self._thread.start()
        return self

    def _run(self) -> None:
        retry = RETRY_INITIAL
        last_token = ""
        while not self.stop.is_set():
            try:
                svid = self.source.fetch_svid(self.spec.audience, *self.spec.extra_audiences, hint=self.hint)
            except (SpiffeBridgeError, LookupError, ValueError) as exc:
                if self.stop.is_set():
                    return
                self.last_error = exc
                log.warning("JWT-SVID for audience %r: %s (retry in %.0fs)", self.spec.audience, exc, retry)
                self.stop.wait(retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            retry = RETRY_INITIAL
            self.last_error = None
            if svid.token != last_token:
                last_token = svid.token
                self.deliver(self.spec, svid)
            self.stop.wait(refresh_delay(svid))
