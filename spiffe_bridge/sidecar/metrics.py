"""Prometheus metrics for the sidecar, rendered by :mod:`spiffe_bridge.promtext` (no extra package).

The page is built from :class:`SidecarStatus` at scrape time, so values can
never drift from what the health endpoints report. Enable with
``metrics { enabled = true }``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from spiffe_bridge import promtext
from spiffe_bridge.promtext import Family
from spiffe_bridge.sidecar.status import SidecarStatus

#: gRPC status names -> numeric codes (0 = no error) for the last-error gauge.
_GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}  # fmt: skip
_P = "spiffe_bridge"


def _families(status: SidecarStatus, links_replaced: int) -> Iterator[Family]:
    snap = status.snapshot()
    rot = Family(f"{_P}_rotations_total", "counter", "New material written to disk")
    last = Family(f"{_P}_last_rotation_timestamp_seconds", "gauge", "When new material last reached disk")
    times = status.timings()
    last_rotation, outputs = times["last_rotation"], times["outputs"]
    svid_not_after, reload_seconds = times["svid_not_after"], times["reload_seconds"]
    for kind, count in snap["rotations"].items():
        rot.add(float(count), kind=kind)
        if kind in last_rotation:
            last.add(last_rotation[kind], kind=kind)
    yield rot
    yield last
    reconnects = Family(f"{_P}_reconnects_total", "counter", "Workload API stream reconnects")
    code = Family(f"{_P}_last_error_code", "gauge", "gRPC status code of the stream's last error (0: none)")
    up = Family(f"{_P}_stream_up", "gauge", "1 while the stream holds a current update")
    for name, info in snap["streams"].items():
        reconnects.add(float(info["reconnects"]), stream=name)
        code.add(float(_GRPC_CODES.get(info["last_error_code"] or "OK", 2)), stream=name)
        up.add(1.0 if info["status"] == "ready" else 0.0, stream=name)
    yield from (reconnects, code, up)
    yield Family(f"{_P}_write_failures_total", "counter", "Failed writes of the output files").add(
        float(snap["write_failures"])
    )
    out_up = Family(f"{_P}_output_up", "gauge", "1 when the output directory's last write succeeded")
    out_failed = Family(
        f"{_P}_output_write_failures_total", "counter", "Failed writes of one output directory"
    )
    out_time = Family(f"{_P}_output_write_duration_seconds", "summary", "Time spent rendering and writing")
    out_last = Family(
        f"{_P}_output_last_write_timestamp_seconds", "gauge", "When the directory was last written"
    )
    for directory, entry in sorted(outputs.items()):
        out_up.add(0.0 if snap["outputs"].get(directory, "").startswith("failed") else 1.0, dir=directory)
        out_failed.add(entry["failures"], dir=directory)
        out_time.add(entry["seconds"], "_sum", dir=directory).add(entry["writes"], "_count", dir=directory)
        if entry["last_write"]:
            out_last.add(entry["last_write"], dir=directory)
    yield from (out_up, out_failed, out_time, out_last)
    yield Family(
        f"{_P}_links_replaced_total",
        "counter",
        "Links planted at an output file name that a write replaced (never followed)",
    ).add(float(links_replaced))
    yield Family(f"{_P}_reloads_total", "counter", "Reload actions run").add(float(snap["reloads"]))
    yield Family(f"{_P}_reload_failures_total", "counter", "Reload actions that failed").add(
        float(snap["reload_failures"])
    )
    yield (
        Family(f"{_P}_reload_duration_seconds", "summary", "Time spent in reload actions")
        .add(reload_seconds, "_sum")
        .add(float(snap["reloads"]), "_count")
    )
    hot = Family(f"{_P}_hot_updates_total", "counter", "Hot updates run (reload_haproxy, ...)")
    hot_failed = Family(f"{_P}_hot_update_failures_total", "counter", "Hot updates that failed")
    for action in sorted({v["action"] for v in snap["hot_updates"].values()}):
        entries = [v for v in snap["hot_updates"].values() if v["action"] == action]
        hot.add(float(sum(v["runs"] for v in entries)), action=action)
        hot_failed.add(float(sum(v["failures"] for v in entries)), action=action)
    yield from (hot, hot_failed)
    remaining = snap["seconds_until_expiry"]
    if remaining is not None:
        yield Family(
            f"{_P}_svid_expiry_seconds", "gauge", "Seconds until the first credential on disk expires"
        ).add(float(remaining))
    if svid_not_after is not None:
        yield Family(
            f"{_P}_svid_not_after_timestamp_seconds", "gauge", "Not-after of the first X.509-SVID on disk"
        ).add(float(svid_not_after))
    yield Family(f"{_P}_ready", "gauge", "1 when ready").add(1.0 if snap["ready"] else 0.0)
    yield Family(
        f"{_P}_identity_lost", "gauge", "1 while the agent has withdrawn this workload's identity"
    ).add(1.0 if snap["identity"] == "lost" else 0.0)
    yield promtext.build_info(_P)
    yield from promtext.process_families()


def renderer(
    status: SidecarStatus, links_replaced: Callable[[], int] = lambda: 0
) -> Callable[[], tuple[bytes, str]]:
    """A function returning (body, content type) of the metrics page for ``status``.

    ``links_replaced`` reads the writers' count of planted links they replaced.
    """

    def render() -> tuple[bytes, str]:
        return promtext.render(_families(status, links_replaced())), promtext.CONTENT_TYPE

    return render
