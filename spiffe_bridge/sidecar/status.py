"""What the sidecar knows about itself, for the health endpoints, metrics and logs.

The runner records every write, reload and stream status change here; the
health server and the metrics collector only read it. ``live`` and ``ready``
are decided in one place so HTTP, metrics and tests agree.

* ready: every configured file was written at least once, the last write did
  not fail, nothing on disk has expired, the identity is not lost under
  the ``unready``/``delete`` policies, and no output is marked not ready (a
  broker-mode output whose workload has no identity, or whose process exited).
* live: no stream stopped for good, no stream has been down longer than
  ``health_max_disconnected``, and the last write did not fail (spiffe-helper's
  rule).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spiffe_bridge.errors import WorkloadApiError
from spiffe_bridge.sources.state import SourceState, SourceStatus

UNWRITTEN, WRITTEN, FAILED = "unwritten", "written", "failed"


@dataclass
class StreamInfo:
    """One Workload API stream (X.509 or JWT bundles) as health and metrics see it."""

    state: SourceState[Any]
    down_since: float | None  # monotonic time the stream left READY (None while ready)


@dataclass
class SidecarStatus:
    """Thread-safe counters and flags; ``snapshot()`` gives a consistent JSON-ready view."""

    x509_configured: bool
    jwt_paths: list[str]
    max_disconnected: float = 600.0
    policy: str = "keep"
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    x509_write_status: str = UNWRITTEN
    jwt_write_status: dict[str, str] = field(default_factory=dict)
    identity_lost: bool = False
    last_write_failed: bool = False
    svid_expires_at: float | None = None
    jwt_expires_at: dict[str, float] = field(default_factory=dict)
    rotations: dict[str, int] = field(default_factory=lambda: {"x509": 0, "jwt": 0})
    write_failures: int = 0
    reloads: int = 0
    reload_failures: int = 0
    streams: dict[str, StreamInfo] = field(default_factory=dict)
    #: per hot update (``action target``): runs, failures, last error
    hot_updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, str | None] = field(default_factory=dict)  # directory -> last error (None: fine)
    #: directory -> why that output holds no current identity (broker mode: NoIdentity, process exited)
    not_ready: dict[str, str] = field(default_factory=dict)
    #: per output directory: writes, failures, seconds spent writing (sum), last write's epoch time
    output_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    last_rotation: dict[str, float] = field(default_factory=dict)  # kind -> epoch seconds
    reload_seconds: float = 0.0  # time spent in reload actions, summed
    #: a stream that delivered an update at least once (until then the identity is not "present")
    received: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.jwt_write_status = dict.fromkeys(self.jwt_paths, UNWRITTEN)

    # -- recording ----------------------------------------------------------------------

    def watch(self, name: str, state: SourceState[Any]) -> None:
        """Track a source's stream status (down from now until its first update)."""
        info = StreamInfo(state, self.monotonic())
        with self._lock:
            self.streams[name] = info

        def on_status(status: SourceStatus, _exc: Exception | None) -> None:
            with self._lock:
                if status is SourceStatus.READY:
                    info.down_since = None
                    self.received = True
                elif info.down_since is None:
                    info.down_since = self.monotonic()

        state.add_status_listener(on_status)

    def wrote(
        self, *, x509: bool, jwt_paths: list[str], svid_expiry: float | None, jwt_expiry: dict[str, float]
    ) -> None:
        """A write of the whole set succeeded."""
        with self._lock:
            self.last_write_failed = False
            if x509:
                self.x509_write_status = WRITTEN
                self.svid_expires_at = svid_expiry
            for path in jwt_paths:
                self.jwt_write_status[path] = WRITTEN
            self.jwt_expires_at.update(jwt_expiry)

    def write_failed(self, *, x509: bool, jwt_paths: list[str]) -> None:
        """A write failed; the previous files (if any) are still on disk."""
        with self._lock:
            self.last_write_failed = True
            self.write_failures += 1
            if x509:
                self.x509_write_status = FAILED
            for path in jwt_paths:
                self.jwt_write_status[path] = FAILED

    def output_ok(self, directory: str, seconds: float = 0.0) -> None:
        """One output directory was written (or was already up to date) in ``seconds``."""
        with self._lock:
            self.outputs[directory] = None
            self.not_ready.pop(directory, None)
            entry = self._output(directory)
            entry["writes"] += 1
            entry["seconds"] += seconds
            entry["last_write"] = self.clock()

    def output_not_ready(self, directory: str, reason: str) -> None:
        """One output has no identity to write (its files, if any, are kept); the others go on."""
        with self._lock:
            self.not_ready[directory] = reason

    def output_failed(self, directory: str, error: str, seconds: float = 0.0) -> None:
        """One output directory could not be rendered or written; the others go on."""
        with self._lock:
            self.outputs[directory] = error
            entry = self._output(directory)
            entry["writes"] += 1
            entry["failures"] += 1
            entry["seconds"] += seconds

    def _output(self, directory: str) -> dict[str, float]:
        return self.output_stats.setdefault(
            directory, {"writes": 0, "failures": 0, "seconds": 0.0, "last_write": 0.0}
        )

    def action_failed(self) -> None:
        """A reload action failed after it had been counted (a ``cmd`` that crashed)."""
        with self._lock:
            self.reload_failures += 1

    def rotated(self, kind: str) -> None:
        """New material of ``kind`` (x509 or jwt) reached disk."""
        with self._lock:
            self.rotations[kind] += 1
            self.last_rotation[kind] = self.clock()

    def reloaded(self, ok: bool, seconds: float = 0.0) -> None:
        """A reload action ran for ``seconds`` (``ok`` False when it failed)."""
        with self._lock:
            self.reloads += 1
            self.reload_seconds += seconds
            if not ok:
                self.reload_failures += 1

    def hot_updated(self, action: str, label: str, error: str | None) -> None:
        """A hot update (reload_haproxy, ...) ran; ``error`` is None when the server took the files."""
        with self._lock:
            entry = self.hot_updates.setdefault(label, {"action": action, "runs": 0, "failures": 0})
            entry["runs"] += 1
            entry["failures"] += error is not None
            entry["last_error"] = error

    def set_identity_lost(self, lost: bool) -> None:
        """The agent withdrew (or restored) this workload's identity."""
        with self._lock:
            self.identity_lost = lost

    def files_removed(self) -> None:
        """The delete policy removed every output file."""
        with self._lock:
            if self.x509_configured:
                self.x509_write_status = UNWRITTEN
            self.jwt_write_status = dict.fromkeys(self.jwt_write_status, UNWRITTEN)
            self.svid_expires_at = None
            self.jwt_expires_at.clear()

    # -- reading ------------------------------------------------------------------------

    def seconds_until_expiry(self) -> float | None:
        """Seconds until the first file on disk expires (SVID or JWT), None if nothing written."""
        with self._lock:
            times = [t for t in [self.svid_expires_at, *self.jwt_expires_at.values()] if t is not None]
        return min(times) - self.clock() if times else None

    def ready(self) -> bool:
        """Files written, last write fine, nothing expired, identity present (unless policy keep)."""
        with self._lock:
            statuses = [self.x509_write_status] if self.x509_configured else []
            statuses += list(self.jwt_write_status.values())
            if any(s != WRITTEN for s in statuses) or self.last_write_failed or self.not_ready:
                return False
            if self.identity_lost and self.policy != "keep":
                return False
        remaining = self.seconds_until_expiry()
        return remaining is None or remaining > 0

    def live(self) -> bool:
        """No stream failed for good or down too long, and the last write did not fail."""
        now = self.monotonic()
        with self._lock:
            if self.last_write_failed:
                return False
            for info in self.streams.values():
                if info.state.status is SourceStatus.FAILED:
                    return False
                if info.down_since is not None and now - info.down_since > self.max_disconnected:
                    return False
        return True

    def timings(self) -> dict[str, Any]:
        """Timestamps and durations for metrics: last rotations, per-output writes, reloads."""
        with self._lock:
            return {
                "last_rotation": dict(self.last_rotation),
                "outputs": {d: dict(v) for d, v in self.output_stats.items()},
                "svid_not_after": self.svid_expires_at,
                "reload_seconds": self.reload_seconds,
            }

    def stream_view(self) -> dict[str, dict[str, Any]]:
        """Per-stream status, counters and last error (code and message, never material)."""
        now = self.monotonic()
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            items = list(self.streams.items())
        for name, info in items:
            state = info.state
            err = state.last_error
            code = err.code.name if isinstance(err, WorkloadApiError) and err.code is not None else None
            out[name] = {
                "status": state.status.value,
                "updates": state.updates,
                "reconnects": state.reconnects,
                "rejected_updates": state.rejected,
                "disconnected_seconds": None if info.down_since is None else round(now - info.down_since, 3),
                "last_error_code": code,
                "last_error": str(err) if err is not None else None,
            }
        return out

    def snapshot(self) -> dict[str, Any]:
        """spiffe-helper's ``health`` object plus this sidecar's extra fields."""
        remaining = self.seconds_until_expiry()
        with self._lock:
            files = {
                "x509_write_status": self.x509_write_status if self.x509_configured else UNWRITTEN,
                "jwt_write_status": dict(self.jwt_write_status),
            }
            extra = {
                "identity": "lost" if self.identity_lost else "present" if self.received else "waiting",
                "on_identity_lost": self.policy,
                "rotations": dict(self.rotations),
                "write_failures": self.write_failures,
                "reloads": self.reloads,
                "reload_failures": self.reload_failures,
                "hot_updates": {k: dict(v) for k, v in self.hot_updates.items()},
                "outputs": {
                    **{d: ("failed: " + e if e else "written") for d, e in self.outputs.items()},
                    **{d: "not ready: " + why for d, why in self.not_ready.items()},
                },
            }
        return {
            "file_write_statuses": files,
            "live": self.live(),
            "ready": self.ready(),
            "seconds_until_expiry": None if remaining is None else round(remaining, 3),
            "streams": self.stream_view(),
            **extra,
        }
