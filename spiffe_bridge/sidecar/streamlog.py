"""What the daemon logs about its Workload API streams: updates, lost, back (after how long), waiting.

Losing a stream that was up is a WARNING; its recovery is logged with the
outage's length (``duration_s``). While a stream has no current update (the
socket does not exist yet, the agent does not answer) a line every
``interval`` seconds says what the daemon waits for, so a sidecar that starts
before its agent is never silent. All log calls carry structured fields
(``stream``, ``address``, ``grpc_code``, ``duration_s``) for the JSON format.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from spiffe_bridge.address import resolve
from spiffe_bridge.errors import WorkloadApiError
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.sources.state import SourceState, SourceStatus
from spiffe_bridge.x509context import X509Context

log = logging.getLogger("spiffe_bridge.sidecar")

#: Seconds between two "still waiting" lines.
WAIT_LOG_INTERVAL = 10.0
_WAITING = (SourceStatus.STARTING, SourceStatus.RECONNECTING)


def grpc_code(exc: BaseException | None) -> str | None:
    """The gRPC status name of a Workload API error, if it has one."""
    if isinstance(exc, WorkloadApiError) and exc.code is not None:
        return exc.code.name
    return None


def x509_fields(ctx: X509Context) -> dict[str, Any]:
    """Log fields of an X.509 update: the default SVID's ID, serial (hex) and not-after."""
    if not ctx.svids:
        return {}
    first = ctx.svids[0]
    return {"spiffe_id": str(first.spiffe_id), "serial": format(first.leaf.serial_number, "x"),
            "not_after": first.expires_at.isoformat(), "svids": len(ctx.svids)}  # fmt: skip


def jwt_fields(svid: JwtSvid, audience: str, file_name: str) -> dict[str, Any]:
    """Log fields of a JWT-SVID update (never the token)."""
    not_after = dt.datetime.fromtimestamp(svid.expiry, dt.UTC).isoformat()
    return {"spiffe_id": str(svid.spiffe_id), "audience": audience, "file": file_name, "not_after": not_after}


def log_reload(ok: bool, seconds: float, first: bool) -> float:
    """Log that the reload actions of one update ended (``duration_s``); returns ``seconds``."""
    fields = {"duration_s": round(seconds, 3), "first": first}
    if ok:
        log.info("reload done in %.3fs", seconds, extra=fields)
    else:
        log.error("reload failed after %.3fs", seconds, extra=fields)
    return seconds


class StreamLog:
    """Status listener and waiting reporter for the streams of one agent address."""

    def __init__(self, address: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.address = address
        self._monotonic = monotonic
        self._started = monotonic()
        self._down_since: dict[str, float] = {}  # stream -> when it left READY (after being up)
        self._was_up: set[str] = set()

    def on_status(self, name: str, status: SourceStatus, exc: Exception | None) -> None:
        """Log a stream leaving READY (WARNING) and coming back (with the outage's length)."""
        now = self._monotonic()
        fields: dict[str, Any] = {"stream": name, "address": self.address, "grpc_code": grpc_code(exc)}
        if status is SourceStatus.READY:
            since = self._down_since.pop(name, None)
            if since is not None:
                fields["duration_s"] = round(now - since, 3)
                log.info("the %s stream is back after %.1fs", name, now - since, extra=fields)
            elif name not in self._was_up:
                fields["duration_s"] = round(now - self._started, 3)
                log.info("the %s stream is up (after %.1fs)", name, now - self._started, extra=fields)
            self._was_up.add(name)
        elif status is SourceStatus.RECONNECTING and name in self._was_up and name not in self._down_since:
            self._down_since[name] = now
            log.warning(
                "lost the %s stream from %s (%s); reconnecting", name, self.address, exc, extra=fields
            )
        elif status is SourceStatus.IDENTITY_LOST and name not in self._down_since:
            self._down_since[name] = now  # the runner says what the policy does

    def waiting_for(self, state: SourceState[Any]) -> str:
        """Why ``state`` has no current update, in words."""
        endpoint = resolve(self.address)
        if endpoint.kind == "unix" and not os.path.exists(endpoint.path):
            return f"socket {endpoint.path} does not exist yet"
        if state.last_error is not None:
            return str(state.last_error)
        return "no answer yet"

    async def report_waiting(
        self, states: Mapping[str, SourceState[Any]], interval: float = WAIT_LOG_INTERVAL
    ) -> None:
        """Every ``interval`` s, log each stream that has no current update and what it waits for."""
        while True:
            await asyncio.sleep(interval)
            now = self._monotonic()
            for name, state in states.items():
                if state.status not in _WAITING:
                    continue
                since = self._down_since.get(name, self._started)
                fields = {"stream": name, "address": self.address, "duration_s": round(now - since, 3),
                          "grpc_code": grpc_code(state.last_error)}  # fmt: skip
                log.info(
                    "still waiting for the Workload API at %s (%s stream, %.0fs): %s",
                    self.address, name, now - since, self.waiting_for(state), extra=fields,
                )  # fmt: skip
