"""Daemon mode: stream identities, write every output, then run the reload action, on one event loop.

Everything runs on one asyncio loop: the X.509 source and the JWT tasks
(sharing one Workload API channel), signal handlers (``add_signal_handler``),
the reload actions and children (watched through pidfds), the health server and
the timers. Updates only mark what changed and wake one publisher task, which
handles them in order; a write is plain synchronous code between two awaits, so
a signal is handled after the write in progress, two writes never overlap, and
the reload action runs only once every file of an update is in place.

Writing, fsync off the loop and per-output failures are :mod:`.outputs`; a
stalled loop is noticed by :mod:`.watchdog` (``/live`` fails, ``WATCHDOG=1`` stops).

Broker mode (docs/broker.md): outputs with a workload reference are written from
that workload's context (:class:`.broker_outputs.WorkloadFeed`), never the
bridge's own, and are ready on their own. The first reload and ``READY=1`` wait
for the bridge's own outputs and a first verdict on every workload output
(written, or not ready and why), so a workload started after the bridge does not
hold it up.

Exit codes: 0 after SIGTERM/SIGINT, the child's code in wrapper mode, 1 when
a stream fails for good (InvalidArgument/Unimplemented) or the health server
cannot start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from spiffe_bridge.client.aio import AsyncWorkloadClient
from spiffe_bridge.errors import NotReadyError
from spiffe_bridge.health import AsyncHealthServer
from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.loglist import capped
from spiffe_bridge.retry import Backoff
from spiffe_bridge.sdnotify import notify
from spiffe_bridge.sidecar import actions as act
from spiffe_bridge.sidecar import jwt_refresh
from spiffe_bridge.sidecar.broker_outputs import WorkloadFeed
from spiffe_bridge.sidecar.config import Config, JwtSvidConfig
from spiffe_bridge.sidecar.exitcodes import EXIT_FAILURE, EXIT_OK
from spiffe_bridge.sidecar.outputs import Outputs
from spiffe_bridge.sidecar.plan import DirPlan
from spiffe_bridge.sidecar.status import SidecarStatus
from spiffe_bridge.sidecar.streamlog import (
    WAIT_LOG_INTERVAL,
    StreamLog,
    grpc_code,
    jwt_fields,
    log_reload,
    x509_fields,
)
from spiffe_bridge.sidecar.watchdog import Heartbeat, Watchdog, systemd_interval
from spiffe_bridge.sources import AsyncX509Source
from spiffe_bridge.sources.state import SourceState, SourceStatus
from spiffe_bridge.x509context import X509Context

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


def build_actions(
    config: Config, wrapper: act.WrapperChild | None, on_cmd_exit: act.OnExit | None = None
) -> act.Actions:
    """The configured reload actions, in the order spiffe-helper runs them."""
    steps: list[act.Action] = []
    if wrapper is not None:
        steps.append(wrapper)
    if config.cmd:
        steps.append(act.ManagedChild([config.cmd, *config.cmd_args], config.renew_signal, on_cmd_exit))
    if config.pid_file_name and config.renew_signal is not None:
        steps.append(act.SignalPidFile(config.pid_file_name, config.renew_signal))
    if config.reload_command:
        steps.append(act.RunCommand(config.reload_command, config.reload_command_timeout))
    return act.Actions(steps)


class Daemon:
    """The long-running sidecar; ``run()`` returns the process exit code."""

    def __init__(self, config: Config, plans: Sequence[DirPlan], *, wrapper_argv: Sequence[str] = ()) -> None:
        self.config = config
        self.status = SidecarStatus(
            x509_configured=config.needs_x509,
            jwt_paths=jwt_paths(config),
            max_disconnected=config.health.max_disconnected,
            policy=config.on_identity_lost,
        )
        self.outputs = Outputs(plans, self.status)
        self.wrapper = (
            act.WrapperChild(wrapper_argv, config.renew_signal, self._exit) if wrapper_argv else None
        )
        self.actions = build_actions(config, self.wrapper, self._cmd_exited)
        self.metrics: Callable[[], tuple[bytes, str]] | None = None
        if config.metrics.enabled:
            from spiffe_bridge.sidecar.metrics import renderer

            self.metrics = renderer(self.status, self.outputs.links_replaced)
        self.ctx: X509Context | None = None
        self.workloads = WorkloadFeed(config, plans, self.status)  # broker mode's outputs
        self.bundles: JwtBundleSet | None = None
        self.tokens: dict[str, JwtSvid] = {}
        self.lost: set[str] = set()
        self.completed_once = False
        self.pending_change = False
        self.client: AsyncWorkloadClient | None = None
        self.x509_source: AsyncX509Source | None = None
        self.jwt_state: SourceState[JwtBundleSet] | None = None
        self.health: AsyncHealthServer | None = None
        self.heartbeat: Heartbeat | None = None
        self.watchdog: Watchdog | None = None
        self.exit_code: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._requested: int | None = None
        self._done: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._pending: dict[str, list[str]] = {}  # kind -> JWT paths, in arrival order
        self._tasks: list[asyncio.Task[None]] = []
        self._retry: asyncio.TimerHandle | None = None
        self._retry_delay = WRITE_RETRY_FIRST
        self.streamlog = StreamLog(config.agent_address)
        #: seconds between "still waiting for the Workload API" lines (tests inject a short one)
        self.wait_log_interval = WAIT_LOG_INTERVAL

    # -- lifecycle ------------------------------------------------------------------------

    def request_stop(self, code: int = EXIT_OK) -> None:
        """Ask the daemon to shut down (thread-safe; used by tests and embedders)."""
        self._requested = code
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(self._exit, code)

    def run(self) -> int:
        """Run the daemon's event loop until asked to stop; return the exit code."""
        return asyncio.run(self.main())

    async def main(self) -> int:
        """Start everything, serve until asked to stop, clean up; return the exit code."""
        self.loop = asyncio.get_running_loop()
        self._done, self._wake = asyncio.Event(), asyncio.Event()
        if self._requested is not None:
            return self._requested
        try:
            self._start_health()
        except OSError as exc:
            log.error("%s", exc)
            return EXIT_FAILURE
        installed = self._install_signals()
        try:
            self._start_watchdog()
            self._tasks.append(asyncio.create_task(self._publisher(), name="spiffe-bridge-publisher"))
            self._start_sources()
            if self._requested is not None:
                self._exit(self._requested)
            await self._done.wait()
        finally:
            await self._shutdown()
            for signum, previous in installed.items():
                self.loop.remove_signal_handler(signum)
                signal.signal(signum, previous)  # an embedder's own handler, not just the default
        return EXIT_OK if self.exit_code is None else self.exit_code

    def _exit(self, code: int) -> None:
        if self.exit_code is None:
            self.exit_code = int(code)
        if self._done is not None:
            self._done.set()

    def _start_health(self) -> None:
        hc = self.config.health
        if not (hc.listener_enabled or self.config.metrics.enabled):
            return
        self.health = AsyncHealthServer(
            self.status,
            host=hc.bind_address,
            port=hc.bind_port,
            liveness_path=hc.liveness_path,
            readiness_path=hc.readiness_path,
            metrics_path=self.config.metrics.path if self.metrics else None,
            metrics=self.metrics,
        ).start()

    def _start_watchdog(self) -> None:
        """Heartbeat and watchdog thread, when someone can observe them (health port, systemd)."""
        ping = systemd_interval()
        if self.health is None and ping is None:
            return
        stall = self.config.health.max_stall
        interval = min(stall / 4, ping) if ping is not None else stall / 4
        self.heartbeat = Heartbeat(interval)
        self.heartbeat.start()
        self.watchdog = Watchdog(
            self.heartbeat,
            stall,
            interval=interval,
            systemd=ping is not None,
            health_socket=self.health.socket if self.health is not None else None,
        ).start()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread() or self.loop is None:
            return {}
        wanted = FORWARDED if self.wrapper else (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous: dict[int, Any] = {}
        for signum in wanted:
            previous[signum] = signal.getsignal(signum) or signal.SIG_DFL  # None: not set from Python
            self.loop.add_signal_handler(signum, self._on_signal, signum)
        return previous

    def _start_sources(self) -> None:
        address = self.config.agent_address
        self.client = AsyncWorkloadClient(address, backoff=RECONNECT)
        if self.config.needs_x509:
            self.x509_source = AsyncX509Source(client=self.client, timeout=None)
            self._watch("x509", self.x509_source.state)
            self.x509_source.subscribe(self._on_x509)
            self._spawn(self._run_x509(self.x509_source), "x509")
        if self.config.jwt_enabled:
            state: SourceState[JwtBundleSet] = SourceState(f"jwt-bundles ({self.client.endpoint})")
            self.jwt_state = state
            self._watch("jwt", state)
            self._spawn(jwt_refresh.watch_bundles(self.client, state, self._on_bundles), "jwt-bundles")
            for spec in self.config.jwt_svids:
                refresher = jwt_refresh.refresh_token(
                    self.client, spec, self.config.hint or None, self._on_token
                )
                self._spawn(refresher, f"jwt-{spec.file_name}")
        log.info("watching the Workload API at %s", address, extra={"address": address})
        states = {name: info.state for name, info in self.status.streams.items()}
        self._spawn(self.streamlog.report_waiting(states, self.wait_log_interval), "waiting")
        if self.workloads and self.x509_source is not None:
            self._spawn(self.workloads.run(self.x509_source, self._on_workload, RECONNECT), "broker")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"spiffe-bridge-{name}"))

    def _watch(self, name: str, state: SourceState[Any]) -> None:
        self.status.watch(name, state)
        state.add_status_listener(lambda st, exc: self.streamlog.on_status(name, st, exc))
        state.add_status_listener(lambda st, _exc: self._on_status(name, st))

    @staticmethod
    async def _run_x509(source: AsyncX509Source) -> None:
        with contextlib.suppress(NotReadyError):  # a stream failing for good is seen by _on_status
            await source.start()

    async def _shutdown(self) -> None:
        notify("STOPPING=1")
        self._stopping = True
        if self._retry is not None:
            self._retry.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.x509_source is not None:
            await self.x509_source.close()
        if self.client is not None:
            await self.client.close()
        await self.actions.stop()
        await self.outputs.close()  # what was written is durable at exit; hot updates stop
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.health is not None:
            await self.health.stop()

    # -- events (all on the loop) ---------------------------------------------------------

    def _on_x509(self, ctx: X509Context) -> None:
        self.ctx = ctx
        ids = capped(s.spiffe_id for s in ctx.svids)
        log.info("received X.509 update for %s", ids, extra=x509_fields(ctx))
        self._queue("x509", [])

    def _on_workload(self) -> None:
        self._queue("x509", [])  # a workload output's context changed (held by self.workloads)

    def _on_bundles(self, bundles: JwtBundleSet) -> None:
        self.bundles = bundles
        if self.config.jwt_bundle_file_name:
            self._queue("jwt", [self._jwt_path(self.config.jwt_bundle_file_name)])

    def _on_token(self, spec: JwtSvidConfig, svid: JwtSvid) -> None:
        self.tokens[spec.file_name] = svid
        fields = jwt_fields(svid, spec.audience, spec.file_name)
        log.info("received JWT-SVID for %s (audience %s)", svid.spiffe_id, spec.audience, extra=fields)
        self._queue("jwt", [self._jwt_path(spec.file_name)])

    def _cmd_exited(self, code: int) -> None:
        if code != 0 and not self._stopping:
            self.status.action_failed()  # a crashed cmd is a failed reload, not a silent zombie

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.wrapper is not None and self.wrapper.forward(signum):
            log.info("forwarded %s to %s", name, self.wrapper.argv[0])
            if signum in _STOPPING:
                self._stopping = True  # exit when the child does, with its code
            return
        if signum in _STOPPING:
            log.info("%s received; shutting down", name)
            self._exit(EXIT_OK)
        else:
            log.info("%s received; ignored", name)

    def _on_status(self, name: str, status: SourceStatus) -> None:
        policy = self.config.on_identity_lost
        if status is SourceStatus.IDENTITY_LOST and name not in self.lost:
            self.lost.add(name)
            self.status.set_identity_lost(True)
            code = grpc_code(self.status.streams[name].state.last_error)
            fields = {"stream": name, "grpc_code": code, "policy": policy}
            msg = "the agent withdrew this workload's identity (%s stream); policy: %s"
            log.warning(msg, name, policy, extra=fields)
            if policy == "delete":
                self._queue("delete", [])
        elif status is SourceStatus.READY and name in self.lost:
            self.lost.discard(name)
            if not self.lost:
                self.status.set_identity_lost(False)
                log.info("identity restored")
                if policy == "delete":
                    if self.x509_source is not None:
                        self.ctx = self.x509_source.state.item or self.ctx
                    if self.jwt_state is not None:
                        self.bundles = self.jwt_state.item or self.bundles
                    self._queue("x509" if self.ctx is not None else "jwt", [])
        elif status is SourceStatus.FAILED:
            state = self.x509_source.state if name == "x509" and self.x509_source else self.jwt_state
            err = state.last_error if state is not None else None
            fields = {"stream": name, "grpc_code": grpc_code(err)}
            log.error("the %s stream stopped for good: %s", name, err, extra=fields)
            self._exit(EXIT_FAILURE)

    def _queue(self, kind: str, paths: list[str]) -> None:
        """Note what changed and wake the publisher (which handles kinds in arrival order)."""
        if self._stopping:
            return
        self._pending.setdefault(kind, []).extend(p for p in paths if p not in self._pending.get(kind, []))
        if self._wake is not None:
            self._wake.set()

    async def _publisher(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and not self._stopping:
                kind = next(iter(self._pending))
                paths = self._pending.pop(kind)
                try:
                    if kind == "delete":
                        await self._remove_files()
                    else:
                        await self._publish(kind, paths)
                except Exception:  # a bug here must not end the daemon: report, retry later
                    log.exception("publishing the %s files failed", kind)
                    self.status.write_failed(x509=kind == "x509", jwt_paths=paths)
                    self._schedule_retry(kind)

    # -- writing --------------------------------------------------------------------------

    def _jwt_path(self, file_name: str) -> str:
        return os.path.join(self.config.cert_dir, file_name)

    def _complete(self) -> bool:
        if self.config.needs_x509 and self.ctx is None:
            return False
        if self.config.jwt_bundle_file_name and self.bundles is None:
            return False
        if not self.workloads.decided():
            return False
        return all(j.file_name in self.tokens for j in self.config.jwt_svids)

    async def _publish(self, kind: str, paths: list[str]) -> None:
        """Write every directory, run the reload action once all is in place, then fsync off the loop."""
        if self.lost and self.config.on_identity_lost == "delete":
            log.info("identity lost: not writing until it is back")
            return
        await self.outputs.settled()  # the previous set is durable before this one replaces it
        changed, failed = self.outputs.write_all(self.ctx, self.tokens, self.bundles, self.workloads.contexts)
        if changed:
            self.outputs.make_durable()  # after the swap, off the loop; the reload does not wait
        self.pending_change = self.pending_change or changed
        if failed:
            log.error("retrying in %gs", self._retry_delay, extra={"failed_dirs": ", ".join(failed)})
            self.status.write_failed(x509=kind == "x509", jwt_paths=paths)
            self._schedule_retry(kind)
        else:
            self._retry_delay = WRITE_RETRY_FIRST
            written = [self._jwt_path(n) for n in self.tokens]
            if self.bundles is not None and self.config.jwt_bundle_file_name:
                written.append(self._jwt_path(self.config.jwt_bundle_file_name))
            jwt_expiry = {self._jwt_path(name): float(svid.expiry) for name, svid in self.tokens.items()}
            self.status.wrote(
                x509=self.ctx is not None,
                jwt_paths=written,
                svid_expiry=self.outputs.svid_expiry(self.ctx, self.workloads.contexts),
                jwt_expiry=jwt_expiry,
            )
        if changed:
            self.status.rotated(kind)
            log.info("%s files updated", "X.509" if kind == "x509" else "JWT", extra={"kind": kind})
        # The first reload (and READY=1) waits for every output; later ones go ahead for those written.
        if not self._complete() or (failed and not self.completed_once):
            return
        first = not self.completed_once
        if (first or self.pending_change) and self.actions:
            started = time.monotonic()
            ok = await self.actions.after_write(first, self.pending_change)
            self.status.reloaded(ok, log_reload(ok, time.monotonic() - started, first))
        if first:
            notify("READY=1")  # systemd Type=notify: units ordered after us find the files
        self.completed_once = True
        self.pending_change = False

    def _schedule_retry(self, kind: str) -> None:
        """Write again later even if the agent sends nothing new: the disk may free up first."""
        if self._retry is not None or self._stopping or self.loop is None:
            return

        def retry() -> None:
            self._retry = None
            self._queue(kind, [])

        self._retry = self.loop.call_later(self._retry_delay, retry)
        self._retry_delay = min(self._retry_delay * 2, WRITE_RETRY_MAX)

    async def _remove_files(self) -> None:
        await self.outputs.remove_all()
        self.status.files_removed()
        log.warning("removed every output file (on_identity_lost = delete)")
