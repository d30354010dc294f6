"""Prometheus metrics for the sidecar (optional dependency ``prometheus_client``).

A custom collector reads :class:`SidecarStatus` at scrape time, so values can
never drift from what the health endpoints report. Enable with
``metrics { enabled = true }``; without ``prometheus_client`` installed that is
a configuration error telling you to install ``spiffe-bridge[metrics]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from spiffe_bridge.sidecar.schema import ConfigError
from spiffe_bridge.sidecar.status import SidecarStatus

#: gRPC status names -> numeric codes (0 = no error) for the last-error gauge.
_GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}  # fmt: skip


def require_prometheus() -> None:
    """Raise ConfigError with install advice when prometheus_client is missing."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError(
            "'metrics.enabled' is true but prometheus_client is not installed; "
            "install it with: pip install 'spiffe-bridge[metrics]'"
        ) from None


def renderer(
    status: SidecarStatus, links_replaced: Callable[[], int] = lambda: 0
) -> Callable[[], tuple[bytes, str]]:
    """A function returning (body, content type) of the metrics page for ``status``.

    ``links_replaced`` reads the writers' count of planted links they replaced.
    """
    require_prometheus()
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self) -> Iterator[Any]:
            snap = status.snapshot()
            rot = CounterMetricFamily(
                "spiffe_bridge_rotations", "New material written to disk", labels=["kind"]
            )
            for kind, count in snap["rotations"].items():
                rot.add_metric([kind], count)
            yield rot
            reconnects = CounterMetricFamily(
                "spiffe_bridge_reconnects", "Workload API stream reconnects", labels=["stream"]
            )
            code = GaugeMetricFamily(
                "spiffe_bridge_last_error_code",
                "gRPC status code of the stream's last error (0: none)",
                labels=["stream"],
            )
            up = GaugeMetricFamily(
                "spiffe_bridge_stream_up", "1 while the stream holds a current update", labels=["stream"]
            )
            for name, info in snap["streams"].items():
                reconnects.add_metric([name], info["reconnects"])
                code.add_metric([name], _GRPC_CODES.get(info["last_error_code"] or "OK", 2))
                up.add_metric([name], 1.0 if info["status"] == "ready" else 0.0)
            yield reconnects
            yield code
            yield up
            yield CounterMetricFamily(
                "spiffe_bridge_write_failures",
                "Failed writes of the output files",
                value=snap["write_failures"],
            )
            yield CounterMetricFamily(
                "spiffe_bridge_links_replaced",
                "Links planted at an output file name that a write replaced (never followed)",
                value=links_replaced(),
            )
            yield CounterMetricFamily("spiffe_bridge_reloads", "Reload actions run", value=snap["reloads"])
            yield CounterMetricFamily(
                "spiffe_bridge_reload_failures", "Reload actions that failed", value=snap["reload_failures"]
            )
            hot = CounterMetricFamily(
                "spiffe_bridge_hot_updates", "Hot updates run (reload_haproxy, ...)", labels=["action"]
            )
            hot_failed = CounterMetricFamily(
                "spiffe_bridge_hot_update_failures", "Hot updates that failed", labels=["action"]
            )
            for action in sorted({v["action"] for v in snap["hot_updates"].values()}):
                entries = [v for v in snap["hot_updates"].values() if v["action"] == action]
                hot.add_metric([action], sum(v["runs"] for v in entries))
                hot_failed.add_metric([action], sum(v["failures"] for v in entries))
            yield hot
            yield hot_failed
            remaining = snap["seconds_until_expiry"]
            if remaining is not None:
                yield GaugeMetricFamily(
                    "spiffe_bridge_svid_expiry_seconds",
                    "Seconds until the first credential on disk expires",
                    value=remaining,
                )
            yield GaugeMetricFamily(
                "spiffe_bridge_ready", "1 when ready", value=1.0 if snap["ready"] else 0.0
            )
            yield GaugeMetricFamily(
                "spiffe_bridge_identity_lost",
                "1 while the agent has withdrawn this workload's identity",
                value=1.0 if snap["identity"] == "lost" else 0.0,
            )

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())

    def render() -> tuple[bytes, str]:
        return generate_latest(registry), CONTENT_TYPE_LATEST

    return render
