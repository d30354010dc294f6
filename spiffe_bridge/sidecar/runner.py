"""Daemon mode: stream identities, write every output, then run the reload action.

All work happens on one thread (the caller's, normally the main thread): the
X.509 and JWT sources, the JWT refreshers, the status listeners, the wrapper
child's waiter and the signal handlers only put events on a queue, and the
loop handles them in order. So a write is never interrupted by a signal (a
SIGTERM is handled after the write in progress), two writes never overlap,
and the reload action runs only once every file of an update is in place.

Exit codes: 0 after SIGTERM/SIGINT, the child's code in wrapper mode, 1 when
a stream fails for good (InvalidArgument/Unimplemented) or the health server
cannot start.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from spiffe_bridge.fileset import FileSetWriter, WriteError
from spiffe_bridge.formats import FormatError
from spiffe_bridge.health import HealthServer
from spiffe_bridge.jwt import JwtBundleSet, JwtSvid
from spiffe_bridge.loglist import capped
from spiffe_bridge.model import X509Context
from spiffe_bridge.retry import Backoff
from spiffe_bridge.sdnotify import notify
from spiffe_bridge.sidecar import actions as act
from spiffe_bridge.sidecar.config import Config
from spiffe_bridge.sidecar.exitcodes import EXIT_FAILURE, EXIT_OK
from spiffe_bridge.sidecar.hot_updates import HotUpdater
from spiffe_bridge.sidecar.jwt_refresh import JwtRefresher
from spiffe_bridge.sidecar.plan import DirPlan
from spiffe_bridge.sidecar.status import SidecarStatus
from spiffe_bridge.source import JwtSource, X509Source
from spiffe_bridge.source_state import SourceStatus

log = logging.getLogger("spiffe_bridge.sidecar")

#: Signals a wrapper forwards to its child.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
#: Reconnect backoff of the daemon's streams: capped at 5 s so a restored identity (entry
#: re-created after PermissionDenied) reaches the files within seconds, not up to 30 s.
RECONNECT = Backoff(initial=0.2, maximum=5.0)
#: Backoff for re-trying a failed write (disk full, read-only) without a new update.
WRITE_RETRY_FIRST, WRITE_RETRY_MAX = 0.5, 30.0
_STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def jwt_paths(config: Config) -> list[str]:
    """spiffe-helper's health keys for JWT files: cert_dir joined with each file name."""
    names = [j.file_name for j in config.jwt_svids]
    if config.jwt_bundle_file_name:
        names.append(config.jwt_bundle_file_name)
    return [os.path.join(config.cert_dir, n) for n in names]


def build_actions(config: Config, wrapper: act.WrapperChild | None) -> act.Actions:
    """The configured reload actions, in the order spiffe-helper runs them."""
    steps: list[act.Action] = []
    if wrapper is not None:
        steps.append(wrapper)
    if config.cmd:
        steps.append(act.ManagedChild([config.cmd, *config.cmd_args], config.renew_signal))
    if config.pid_file_name and config.renew_signal is not None:
        steps.append(act.SignalPidFile(config.pid_file_name, config.renew_signal))
    if config.reload_command:
        steps.append(act.RunCommand(config.reload_command, config.reload_command_timeout))
    return act.Actions(steps)


class Daemon:
    """The long-running sidecar; ``run()`` returns the process exit code."""

    def __init__(
        self,
        config: Config,
        plans: Sequence[DirPlan],
        *,
        wrapper_argv: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.status = SidecarStatus(
            x509_configured=config.needs_x509,
            jwt_paths=jwt_paths(config),
            max_disconnected=config.health.max_disconnected,
            policy=config.on_identity_lost,
        )
        self.writers: list[tuple[DirPlan, FileSetWriter]] = [(p, p.writer()) for p in plans]
        self.wrapper = (
            act.WrapperChild(wrapper_argv, config.renew_signal, lambda code: self.events.put(("exit", code)))
            if wrapper_argv
            else None
        )
        self.actions = build_actions(config, self.wrapper)
        self.hot = HotUpdater([u for p in plans for u in p.updates], self.status.hot_updated)
        self.metrics: Callable[[], tuple[bytes, str]] | None = None
        if config.metrics.enabled:
            from spiffe_bridge.sidecar.metrics import renderer

            self.metrics = renderer(self.status, lambda: sum(w.links_replaced for _, w in self.writers))
        self.stop_event = threading.Event()
        self.ctx: X509Context | None = None
        self.bundles: JwtBundleSet | None = None
        self.tokens: dict[str, JwtSvid] = {}
        self.lost: set[str] = set()
        self.completed_once = False
        self.pending_change = False
        self.x509_source: X509Source | None = None
        self.jwt_source: JwtSource | None = None
        self.health: HealthServer | None = None
        self.exit_code: int | None = None
        self._stopping = False
        self._retry_timer: threading.Timer | None = None
        self._retry_delay = WRITE_RETRY_FIRST

    # -- lifecycle ------------------------------------------------------------------------

    def request_stop(self, code: int = EXIT_OK) -> None:
        """Ask the loop to shut down (thread-safe; used by tests and embedders)."""
        self.events.put(("exit", code))

    def run(self) -> int:
        """Start everything, handle events until asked to stop, clean up; return the exit code."""
        try:
            self._start_health()
        except OSError as exc:
            log.error("%s", exc)
            return EXIT_FAILURE
        previous = self._install_signals()
        try:
            self._start_sources()
            while self.exit_code is None:
                # No timeout: an idle sidecar should not wake up. Signals still get through:
                # SimpleQueue.get is interrupted to run the handler, which puts an event here.
                kind, payload = self.events.get()
                self._handle(kind, payload)
        finally:
            self._shutdown()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return EXIT_OK if self.exit_code is None else self.exit_code

    def _start_health(self) -> None:
        hc = self.config.health
        if not (hc.listener_enabled or self.config.metrics.enabled):
            return
        self.health = HealthServer(
            self.status,
            host=hc.bind_address,
            port=hc.bind_port,
            liveness_path=hc.liveness_path,
            readiness_path=hc.readiness_path,
            metrics_path=self.config.metrics.path if self.metrics else None,
            metrics=self.metrics,
        ).start()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        wanted = FORWARDED if self.wrapper else (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous: dict[int, Any] = {}
        for signum in wanted:
            previous[signum] = signal.signal(signum, lambda n, _f: self.events.put(("signal", n)))
        return previous

    def _start_sources(self) -> None:
        address = self.config.agent_address
        if self.config.needs_x509:
            self.x509_source = X509Source(address, timeout=0, backoff=RECONNECT)
            self._watch("x509", self.x509_source)
            self.x509_source.subscribe(lambda ctx: self.events.put(("x509", ctx)))
        if self.config.jwt_enabled:
            self.jwt_source = JwtSource(address, timeout=0, backoff=RECONNECT)
            self._watch("jwt", self.jwt_source)
            if self.config.jwt_bundle_file_name:
                self.jwt_source.subscribe(lambda b: self.events.put(("jwt_bundles", b)))
            for spec in self.config.jwt_svids:
                JwtRefresher(
                    self.jwt_source,
                    spec,
                    self.config.hint or None,
                    lambda s, svid: self.events.put(("jwt_svid", (s, svid))),
                    self.stop_event,
                ).start()
        log.info("watching the Workload API at %s", address)

    def _watch(self, name: str, source: X509Source | JwtSource) -> None:
        self.status.watch(name, source.state)
        source.state.add_status_listener(lambda st, _exc: self.events.put(("status", (name, st))))

    def _shutdown(self) -> None:
        notify("STOPPING=1")
        self.stop_event.set()
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        for source in (self.x509_source, self.jwt_source):
            if source is not None:
                source.close()
        self.actions.stop()
        self.hot.stop()
        if self.health is not None:
            self.health.stop()

    # -- events ---------------------------------------------------------------------------

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "exit":
            self.exit_code = int(payload)
        elif kind == "signal":
            self._on_signal(int(payload))
        elif kind == "status":
            self._on_status(*payload)
        elif self._stopping:
            return
        elif kind == "retry":
            self._retry_timer = None
            self._publish(str(payload), [])
        elif kind == "x509":
            self.ctx = payload
            log.info("received X.509 update for %s", capped(s.spiffe_id for s in payload.svids))
            self._publish("x509", [])
        elif kind == "jwt_bundles":
            self.bundles = payload
            self._publish("jwt", [self._jwt_path(self.config.jwt_bundle_file_name)])
        elif kind == "jwt_svid":
            spec, svid = payload
            self.tokens[spec.file_name] = svid
            log.info("received JWT-SVID for %s (audience %s)", svid.spiffe_id, spec.audience)
            self._publish("jwt", [self._jwt_path(spec.file_name)])

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.wrapper is not None:
            forwarded = self.wrapper.forward(signum)
            if forwarded:
                log.info("forwarded %s to %s", name, self.wrapper.argv[0])
                if signum in _STOPPING:
                    self._stopping = True  # exit when the child does, with its code
                return
        if signum in _STOPPING:
            log.info("%s received; shutting down", name)
            self.exit_code = EXIT_OK
        else:
            log.info("%s received; ignored", name)

    def _on_status(self, name: str, status: SourceStatus) -> None:
        policy = self.config.on_identity_lost
        if status is SourceStatus.IDENTITY_LOST and name not in self.lost:
            self.lost.add(name)
            self.status.set_identity_lost(True)
            log.warning("the agent withdrew this workload's identity (%s stream); policy: %s", name, policy)
            if policy == "delete":
                self._remove_files()
        elif status is SourceStatus.READY and name in self.lost:
            self.lost.discard(name)
            if not self.lost:
                self.status.set_identity_lost(False)
                log.info("identity restored")
                if policy == "delete":
                    if self.x509_source is not None:
                        self.ctx = self.x509_source.state.item or self.ctx
                    if self.jwt_source is not None:
                        self.bundles = self.jwt_source.state.item or self.bundles
                    self._publish("x509" if self.ctx is not None else "jwt", [])
        elif status is SourceStatus.FAILED:
            source = self.x509_source if name == "x509" else self.jwt_source
            err = source.last_error if source is not None else None
            log.error("the %s stream stopped for good: %s", name, err)
            self.exit_code = EXIT_FAILURE

    # -- writing --------------------------------------------------------------------------

    def _jwt_path(self, file_name: str) -> str:
        return os.path.join(self.config.cert_dir, file_name)

    def _complete(self) -> bool:
        if self.config.needs_x509 and self.ctx is None:
            return False
        if self.config.jwt_bundle_file_name and self.bundles is None:
            return False
        return all(j.file_name in self.tokens for j in self.config.jwt_svids)

    def _expiries(self) -> tuple[float | None, dict[str, float]]:
        svid_expiry: float | None = None
        if self.ctx is not None:
            times = []
            for plan, _ in self.writers:
                for out in plan.x509:
                    try:
                        times.append(self.ctx.svid(hint=out.options.hint or None).expires_at.timestamp())
                    except LookupError:
                        continue
            svid_expiry = min(times) if times else None
        jwt = {self._jwt_path(name): float(svid.expiry) for name, svid in self.tokens.items()}
        return svid_expiry, jwt

    def _publish(self, kind: str, paths: list[str]) -> None:
        """Render and write every directory, then run the reload action once all is in place."""
        if self.lost and self.config.on_identity_lost == "delete":
            log.info("identity lost: not writing until it is back")
            return
        changed = False
        try:
            for plan, writer in self.writers:
                files = plan.render(self.ctx, self.tokens, self.bundles)
                if files and writer.write(files).changed:
                    changed = True
                    if self.hot:  # servers that take new files without a reload (never blocks)
                        self.hot.after_write(plan.directory, files)
        except (FormatError, WriteError, OSError, ValueError) as exc:
            log.error(
                "writing the %s files failed (previous files kept; retrying in %gs): %s",
                kind,
                self._retry_delay,
                exc,
            )
            self.status.write_failed(x509=kind == "x509", jwt_paths=paths)
            self.pending_change = self.pending_change or changed
            self._schedule_retry(kind)
            return
        self._retry_delay = WRITE_RETRY_FIRST
        written = [self._jwt_path(n) for n in self.tokens]
        if self.bundles is not None and self.config.jwt_bundle_file_name:
            written.append(self._jwt_path(self.config.jwt_bundle_file_name))
        svid_expiry, jwt_expiry = self._expiries()
        self.status.wrote(
            x509=self.ctx is not None, jwt_paths=written, svid_expiry=svid_expiry, jwt_expiry=jwt_expiry
        )
        if changed:
            self.status.rotated(kind)
            log.info("%s files updated", "X.509" if kind == "x509" else "JWT")
        self.pending_change = self.pending_change or changed
        if not self._complete():
            return
        first = not self.completed_once
        if (first or self.pending_change) and self.actions:
            self.status.reloaded(self.actions.after_write(first, self.pending_change))
        if first:
            notify("READY=1")  # systemd Type=notify: units ordered after us find the files
        self.completed_once = True
        self.pending_change = False

    def _schedule_retry(self, kind: str) -> None:
        """Write again later even if the agent sends nothing new: the disk may free up first."""
        if self._retry_timer is not None or self.stop_event.is_set():
            return
        timer = threading.Timer(self._retry_delay, self.events.put, args=(("retry", kind),))
        timer.daemon = True
        self._retry_timer = timer
        self._retry_delay = min(self._retry_delay * 2, WRITE_RETRY_MAX)
        timer.start()

    def _remove_files(self) -> None:
        for plan, writer in self.writers:
            try:
                writer.remove()
            except (WriteError, OSError) as exc:
                log.error("could not remove the files in %s: %s", plan.directory, exc)
        self.status.files_removed()
        log.warning("removed every output file (on_identity_lost = delete)")
