"""Daemon mode: stream identities, write every output, then run the reload action, on one event loop.

Everything runs on one asyncio loop: the X.509 source and the JWT tasks
(sharing one Workload API channel), signal handlers (``add_signal_handler``),
the reload actions and children (watched through pidfds), the health server and
the timers. This module starts and stops all of it and turns stream events and
signals into work for :mod:`.publisher` (the one task that writes and reloads,
in order). Writing, fsync off the loop and per-output failures are
:mod:`.outputs`; the health server and the stall watchdog are :mod:`.monitoring`.

Broker mode (docs/broker.md): outputs with a workload reference are written from
that workload's context (:class:`.workload_feed.WorkloadFeed`), never the
bridge's own, and are ready on their own.

Exit codes: 0 after SIGTERM/SIGINT, the child's code in wrapper mode, 1 when
a stream fails for good (InvalidArgument/Unimplemented) or the health server
cannot start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Coroutine, Sequence
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
from spiffe_bridge.sidecar.config import Config, JwtSvidConfig
from spiffe_bridge.sidecar.exitcodes import EXIT_FAILURE, EXIT_OK
from spiffe_bridge.sidecar.monitoring import metrics_renderer, start_health, start_watchdog
from spiffe_bridge.sidecar.outputs import Outputs
from spiffe_bridge.sidecar.plan import DirPlan
from spiffe_bridge.sidecar.publisher import Publisher, jwt_paths
from spiffe_bridge.sidecar.status import SidecarStatus
from spiffe_bridge.sidecar.streamlog import WAIT_LOG_INTERVAL, StreamLog, grpc_code, jwt_fields, x509_fields
from spiffe_bridge.sidecar.watchdog import Heartbeat, Watchdog
from spiffe_bridge.sidecar.workload_feed import WorkloadFeed
from spiffe_bridge.sources import AsyncX509Source
from spiffe_bridge.sources.state import SourceState, SourceStatus
from spiffe_bridge.x509context import X509Context

log = logging.getLogger("spiffe_bridge.sidecar")

#: Signals a wrapper forwards to its child.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
#: Reconnect backoff of the daemon's streams: capped at 5 s so a restored identity (entry
#: re-created after PermissionDenied) reaches the files within seconds, not up to 30 s.
RECONNECT = Backoff(initial=0.2, maximum=5.0)
_STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


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
        self.metrics = metrics_renderer(config, self.status, self.outputs)
        self.workloads = WorkloadFeed(config, plans, self.status)  # broker mode's outputs
        self.publisher = Publisher(
            config,
            self.status,
            self.outputs,
            self.workloads,
            build_actions(config, self.wrapper, self._cmd_exited),
        )
        self.client: AsyncWorkloadClient | None = None
        self.x509_source: AsyncX509Source | None = None
        self.jwt_state: SourceState[JwtBundleSet] | None = None
        self.health: AsyncHealthServer | None = None
        self.heartbeat: Heartbeat | None = None
        self.watchdog: Watchdog | None = None
        self.exit_code: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._requested: int | None = None
        self._done: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.streamlog = StreamLog(config.agent_address)
        #: seconds between "still waiting for the Workload API" lines (tests inject a short one)
        self.wait_log_interval = WAIT_LOG_INTERVAL

    @property
    def actions(self) -> act.Actions:
        """What runs after a write (replaceable before ``run``, as the demo does)."""
        return self.publisher.actions

    @actions.setter
    def actions(self, value: act.Actions) -> None:
        self.publisher.actions = value

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
        self._done = asyncio.Event()
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
            self._tasks.append(self.publisher.start())
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
        self.health = start_health(self.config, self.status, self.metrics)

    def _start_watchdog(self) -> None:
        started = start_watchdog(self.config, self.health)
        if started is not None:
            self.heartbeat, self.watchdog = started

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
        self.publisher.stop()
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
        self.publisher.ctx = ctx
        ids = capped(s.spiffe_id for s in ctx.svids)
        log.info("received X.509 update for %s", ids, extra=x509_fields(ctx))
        self.publisher.queue("x509", [])

    def _on_workload(self) -> None:
        self.publisher.queue("x509", [])  # a workload output's context changed (held by self.workloads)

    def _on_bundles(self, bundles: JwtBundleSet) -> None:
        self.publisher.bundles = bundles
        if self.config.jwt_bundle_file_name:
            self.publisher.queue("jwt", [self.publisher.jwt_path(self.config.jwt_bundle_file_name)])

    def _on_token(self, spec: JwtSvidConfig, svid: JwtSvid) -> None:
        self.publisher.tokens[spec.file_name] = svid
        fields = jwt_fields(svid, spec.audience, spec.file_name)
        log.info("received JWT-SVID for %s (audience %s)", svid.spiffe_id, spec.audience, extra=fields)
        self.publisher.queue("jwt", [self.publisher.jwt_path(spec.file_name)])

    def _cmd_exited(self, code: int) -> None:
        if code != 0 and not self.publisher.stopping:
            self.status.action_failed()  # a crashed cmd is a failed reload, not a silent zombie

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.wrapper is not None and self.wrapper.forward(signum):
            log.info("forwarded %s to %s", name, self.wrapper.argv[0])
            if signum in _STOPPING:
                self.publisher.stopping = True  # exit when the child does, with its code
            return
        if signum in _STOPPING:
            log.info("%s received; shutting down", name)
            self._exit(EXIT_OK)
        else:
            log.info("%s received; ignored", name)

    def _on_status(self, name: str, status: SourceStatus) -> None:
        policy = self.config.on_identity_lost
        pub = self.publisher
        if status is SourceStatus.IDENTITY_LOST and name not in pub.lost:
            pub.lost.add(name)
            self.status.set_identity_lost(True)
            code = grpc_code(self.status.streams[name].state.last_error)
            fields = {"stream": name, "grpc_code": code, "policy": policy}
            msg = "the agent withdrew this workload's identity (%s stream); policy: %s"
            log.warning(msg, name, policy, extra=fields)
            if policy == "delete":
                pub.queue("delete", [])
        elif status is SourceStatus.READY and name in pub.lost:
            pub.lost.discard(name)
            if not pub.lost:
                self.status.set_identity_lost(False)
                log.info("identity restored")
                if policy == "delete":
                    if self.x509_source is not None:
                        pub.ctx = self.x509_source.state.item or pub.ctx
                    if self.jwt_state is not None:
                        pub.bundles = self.jwt_state.item or pub.bundles
                    pub.queue("x509" if pub.ctx is not None else "jwt", [])
        elif status is SourceStatus.FAILED:
            state = self.x509_source.state if name == "x509" and self.x509_source else self.jwt_state
            err = state.last_error if state is not None else None
            fields = {"stream": name, "grpc_code": grpc_code(err)}
            log.error("the %s stream stopped for good: %s", name, err, extra=fields)
            self._exit(EXIT_FAILURE)
