"""Health and metrics of a running relay, served by ``spiffe_bridge.health.HealthServer``.

Liveness means the relay's event loop answers (its stats are read *on* that
loop, with a deadline), so a wedged loop fails the probe; readiness means
FetchX509SVID streams on every socket get SVIDs (not an error). Metrics are written in the
Prometheus text format by :mod:`spiffe_bridge.promtext`, the renderer the sidecar uses too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from spiffe_bridge import promtext
from spiffe_bridge.health import HealthServer, MetricsRenderer
from spiffe_bridge.promtext import Family
from spiffe_bridge.relay.aio import AsyncRelay
from spiffe_bridge.relay.feed import Kind
from spiffe_bridge.relay.observe import RelayStats

#: Seconds the relay's loop has to answer a probe before it counts as not live.
PROBE_TIMEOUT = 2.0

#: Reads every socket's stats from any thread; raises TimeoutError if the relay does not answer.
StatsReader = Callable[[], Sequence[RelayStats]]


def loop_stats(
    relay: AsyncRelay, loop: asyncio.AbstractEventLoop, timeout: float = PROBE_TIMEOUT
) -> StatsReader:
    """A thread-safe reader of ``relay.all_stats()``, run on ``loop`` (the relay's)."""

    async def read() -> tuple[RelayStats, ...]:
        return relay.all_stats()

    def reader() -> tuple[RelayStats, ...]:
        future = asyncio.run_coroutine_threadsafe(read(), loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"relay event loop did not answer within {timeout}s") from None

    return reader


class RelayHealth:
    """``HealthSource`` of a relay. Use ``RelayHealth(relay.all_stats)`` with the threaded ``Relay``."""

    def __init__(self, stats: StatsReader) -> None:
        self._stats = stats

    def _read(self) -> Sequence[RelayStats] | None:
        try:
            return self._stats()
        except (TimeoutError, RuntimeError):  # not answering, or not running
            return None

    def live(self) -> bool:
        """True while the relay's loop answers."""
        return self._read() is not None

    def ready(self) -> bool:
        """True while new FetchX509SVID streams get SVIDs on every socket."""
        stats = self._read()
        if not stats:
            return False
        return all(s.feeds[Kind.X509_SVID.value].serving for s in stats)

    def snapshot(self) -> dict[str, Any]:
        """Every socket's stream kinds with state and counters, or why there are none."""
        stats = self._read()
        if stats is None:
            return {"relay": "not answering"}
        return {"sockets": {s.socket: dataclasses.asdict(s) for s in stats}}


#: (metric, type, help, FeedStats field) of the per-method series.
_FEED_METRICS = (
    (
        "serving",
        "gauge",
        "1 while streams of this method get data, 0 while they end with an error",
        "serving",
    ),
    ("version", "gauge", "Number of state changes served on this method", "version"),
    ("open_streams", "gauge", "Downstream streams open now", "open_streams"),
    ("messages_sent_total", "counter", "Messages written to downstream streams", "messages_sent"),
    ("upstream_updates_total", "counter", "Messages received from upstream", "upstream_updates"),
    ("invalid_updates_total", "counter", "Upstream messages that failed validation", "invalid_updates"),
)


def render_metrics(stats: StatsReader) -> MetricsRenderer:
    """The ``/metrics`` page of a relay (Prometheus text format 0.0.4)."""

    def families(current: Sequence[RelayStats]) -> list[Family]:
        out = []
        for name, kind, help_text, attribute in _FEED_METRICS:
            family = Family(f"spiffe_bridge_relay_{name}", kind, help_text)
            for socket in current:
                for method, feed in sorted(socket.feeds.items()):
                    family.add(int(getattr(feed, attribute)), socket=socket.socket, method=method)
            out.append(family)
        for name, help_text, attribute in (
            ("forwarded_calls_total", "Unary calls forwarded upstream", "forwarded_calls"),
            ("rejected_calls_total", "Calls refused for a missing security header", "rejected_calls"),
        ):
            family = Family(f"spiffe_bridge_relay_{name}", "counter", help_text)
            for socket in current:
                family.add(int(getattr(socket, attribute)), socket=socket.socket)
            out.append(family)
        return [*out, promtext.build_info("spiffe_bridge"), *promtext.process_families()]

    def render() -> tuple[bytes, str]:
        return promtext.render(families(stats())), promtext.CONTENT_TYPE

    return render


def health_server(relay: AsyncRelay, host: str, port: int) -> HealthServer:
    """A bound (not yet started) server of ``/live``, ``/ready`` and ``/metrics`` for ``relay``.

    Call it on the relay's event loop: the stats are read there.
    """
    reader = loop_stats(relay, asyncio.get_running_loop())
    return HealthServer(
        RelayHealth(reader), host=host, port=port, metrics_path="/metrics", metrics=render_metrics(reader)
    )
