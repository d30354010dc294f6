"""What lets others watch a running daemon: the health/metrics server and the stall watchdog.

The server answers ``/live``, ``/ready`` and ``/metrics`` from
:class:`.status.SidecarStatus` on the daemon's loop; the heartbeat and
watchdog (:mod:`.watchdog`) run only when someone can observe them (a health
port, or systemd's ``WatchdogSec=``).
"""

from __future__ import annotations

from collections.abc import Callable

from spiffe_bridge.health import AsyncHealthServer
from spiffe_bridge.sidecar.config import Config
from spiffe_bridge.sidecar.outputs import Outputs
from spiffe_bridge.sidecar.status import SidecarStatus
from spiffe_bridge.sidecar.watchdog import Heartbeat, Watchdog, systemd_interval

Metrics = Callable[[], tuple[bytes, str]]


def metrics_renderer(config: Config, status: SidecarStatus, outputs: Outputs) -> Metrics | None:
    """The Prometheus page of this sidecar, when metrics are enabled."""
    if not config.metrics.enabled:
        return None
    from spiffe_bridge.sidecar.metrics import renderer

    return renderer(status, outputs.links_replaced)


def start_health(config: Config, status: SidecarStatus, metrics: Metrics | None) -> AsyncHealthServer | None:
    """The health (and metrics) server, started on the running loop, when one is configured.

    OSError when it cannot bind.
    """
    hc = config.health
    if not (hc.listener_enabled or config.metrics.enabled):
        return None
    return AsyncHealthServer(
        status,
        host=hc.bind_address,
        port=hc.bind_port,
        liveness_path=hc.liveness_path,
        readiness_path=hc.readiness_path,
        metrics_path=config.metrics.path if metrics else None,
        metrics=metrics,
    ).start()


def start_watchdog(config: Config, health: AsyncHealthServer | None) -> tuple[Heartbeat, Watchdog] | None:
    """Heartbeat and watchdog thread, when someone can observe them (health port, systemd)."""
    ping = systemd_interval()
    if health is None and ping is None:
        return None
    stall = config.health.max_stall
    interval = min(stall / 4, ping) if ping is not None else stall / 4
    heartbeat = Heartbeat(interval)
    heartbeat.start()
    try:
        watchdog = Watchdog(
            heartbeat,
            stall,
            interval=interval,
            systemd=ping is not None,
            health_socket=health.socket if health is not None else None,
        ).start()
    except BaseException:
        heartbeat.stop()
        raise
    return heartbeat, watchdog
