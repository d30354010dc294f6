"""Broker mode for the sidecar: the X.509 context of each output that references a workload.

``workload_updates(config, source)`` yields a ``WorkloadUpdate`` whenever an
output's workload gets a new X.509 context (write it, owned by that output's
uid) or stops having one (``context`` None: that output is not ready). One
``AsyncBrokerClient`` serves every output; ``source`` is the bridge's own
identity (``agent_address``), which authenticates it to the agent.

Per output: a fixed ``workload_pid``, or a ``workload_pid_file`` that is re-read
every ``poll_interval`` (a new PID restarts the subscription for it; a missing
or unreadable file means no workload yet). When the process exits the watch
ends and the output is not ready until the file names a live process again.
``fetch_once`` is the one-shot variant (NoIdentityError when any has none);
``WorkloadFeed`` is the daemon's: it holds each output's current context and
records per-output readiness in the sidecar status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from spiffe_bridge.broker import agent_authorizer
from spiffe_bridge.broker.aio import AsyncBrokerClient
from spiffe_bridge.errors import (
    NoIdentityError,
    SpiffeBridgeError,
    WorkloadApiError,
    WorkloadNotFoundError,
)
from spiffe_bridge.loglist import capped
from spiffe_bridge.model import X509Context
from spiffe_bridge.retry import Backoff
from spiffe_bridge.sidecar.config import BrokerConfig, Config, OutputConfig
from spiffe_bridge.sidecar.plan import DirPlan
from spiffe_bridge.sidecar.status import SidecarStatus
from spiffe_bridge.sources import AsyncX509Source
from spiffe_bridge.sources.protocols import X509SourceLike
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.tls.authorize import Authorizer, authorize_if

log = logging.getLogger("spiffe_bridge.sidecar.broker")

#: How often a pid file is re-read.
POLL_INTERVAL = 1.0
#: A pid file is a few bytes; anything bigger is not one.
MAX_PID_FILE = 64


@dataclass(frozen=True)
class WorkloadUpdate:
    """What output ``index`` (into ``config.outputs``) should hold now; None: not ready, and why."""

    index: int
    pid: int | None
    context: X509Context | None
    error: Exception | None = None


def not_ready_reason(update: WorkloadUpdate) -> str:
    """Why output ``update.index`` holds no identity, for the health status and the log."""
    err = update.error
    if isinstance(err, WorkloadNotFoundError):  # also WorkloadExitedError
        kind = "process exited"
    elif isinstance(err, NoIdentityError):
        kind = "NoIdentity"
    elif isinstance(err, LookupError):
        kind = "no workload process"
    else:
        kind = "unavailable"
    return f"{kind}: {err}" if err is not None else kind


def default_agent(source: X509SourceLike, broker: BrokerConfig) -> Authorizer:
    """``agent_id`` if set, else any SPIRE agent (``/spire/agent/...``) of the bridge's own trust domain."""
    if broker.agent_id:
        return agent_authorizer(broker.agent_id)
    own = source.context.svid(hint=broker.hint or None, spiffe_id=broker.spiffe_id or None)
    td = own.spiffe_id.trust_domain

    def is_agent(peer: SpiffeId) -> bool:
        return peer.trust_domain == td and peer.path.startswith("/spire/agent/")

    return authorize_if(is_agent, f"a SPIRE agent of {td.id_string}")


def client_for(config: Config, source: X509SourceLike) -> AsyncBrokerClient:
    """The Broker API client of ``config.broker``, authenticated with the bridge's SVID from ``source``."""
    broker = config.broker
    if broker is None:
        raise SpiffeBridgeError("no 'broker' block in the configuration")
    return AsyncBrokerClient(
        broker.address,
        source,
        agent=default_agent(source, broker),
        spiffe_id=broker.spiffe_id or None,
        hint=broker.hint or None,
    )


def read_pid_file(path: str) -> int | None:
    """The PID in ``path``, or None (missing, not a regular file, not a PID). Never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, MAX_PID_FILE + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        pid = int(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    return pid if 0 < pid < 2**31 and len(text) <= MAX_PID_FILE else None


def _current_pid(output: OutputConfig) -> int | None:
    if output.workload_pid is not None:
        return output.workload_pid
    return read_pid_file(output.workload_pid_file)


async def _follow(
    index: int,
    output: OutputConfig,
    client: AsyncBrokerClient,
    queue: asyncio.Queue[WorkloadUpdate],
    poll_interval: float,
) -> None:
    """Keep output ``index`` fed: subscribe for the current PID, restart when the PID changes."""
    pid: int | None = None
    watch: asyncio.Task[None] | None = None
    announced_missing = False
    try:
        while True:
            now = _current_pid(output)
            # only a new PID restarts the watch: a stale file naming a recycled PID is not followed
            if now != pid:
                if watch is not None:
                    watch.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watch
                    watch = None
                pid = now
                if pid is None:
                    if not announced_missing:
                        what = output.workload_pid_file or "workload_pid"
                        await queue.put(WorkloadUpdate(index, None, None, LookupError(f"no PID in {what}")))
                        announced_missing = True
                else:
                    announced_missing = False
                    watch = asyncio.create_task(_subscribe(index, pid, client, queue))
            if output.workload_pid is not None and watch is not None:
                await watch  # a fixed PID: nothing to poll, its watch ends when the process does
                return
            await asyncio.sleep(poll_interval)
    finally:
        if watch is not None:
            watch.cancel()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _subscribe(
    index: int, pid: int, client: AsyncBrokerClient, queue: asyncio.Queue[WorkloadUpdate]
) -> None:
    def on_error(exc: Exception) -> None:
        if isinstance(exc, NoIdentityError):  # no registration entry for the workload (yet)
            queue.put_nowait(WorkloadUpdate(index, pid, None, exc))

    try:
        async for context in client.watch_x509_contexts(pid, on_error=on_error):
            await queue.put(WorkloadUpdate(index, pid, context))
    except (WorkloadApiError, ValueError) as exc:  # the process exited, or a PID that cannot be one
        await queue.put(WorkloadUpdate(index, pid, None, exc))


async def workload_updates(
    config: Config, source: X509SourceLike, *, poll_interval: float = POLL_INTERVAL
) -> AsyncIterator[WorkloadUpdate]:
    """Every change of every workload output's context, for as long as the caller iterates."""
    outputs = [(i, out) for i, out in enumerate(config.outputs) if out.workload]
    if not outputs:
        return
    queue: asyncio.Queue[WorkloadUpdate] = asyncio.Queue()
    async with client_for(config, source) as client:
        tasks = [asyncio.create_task(_follow(i, out, client, queue, poll_interval)) for i, out in outputs]
        try:
            while True:
                yield await queue.get()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def fetch_once(config: Config, source: X509SourceLike, timeout: float) -> dict[int, X509Context]:
    """One-shot: the context of every workload output, waiting up to ``timeout`` for each to be issued.

    NoIdentityError (exit 4) when an output's workload has no identity by then, its
    pid file names no PID, or the process does not exist.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    result: dict[int, X509Context] = {}
    async with client_for(config, source) as client:
        for index, output in enumerate(config.outputs):
            if not output.workload:
                continue
            while True:
                pid = _current_pid(output)
                left = deadline - loop.time()
                try:
                    if pid is None:
                        raise NoIdentityError(f"outputs[{index}]: no PID in {output.workload_pid_file}")
                    if not _alive(pid):
                        raise NoIdentityError(f"outputs[{index}]: no process with pid {pid}")
                    result[index] = await client.fetch_x509_context(pid, timeout=max(left, 0.1))
                    break
                except NoIdentityError:
                    if left <= 0:
                        raise
                await asyncio.sleep(min(POLL_INTERVAL, max(left, 0.0)))
    return result


class WorkloadFeed:
    """The daemon's workload outputs: each one's current context, and its readiness in ``status``.

    ``contexts[index]`` is what output ``index`` should hold (None: not ready, files kept);
    an index is absent until its first verdict. ``on_change`` is called on the loop after
    every update, to have the outputs written.
    """

    def __init__(self, config: Config, plans: Sequence[DirPlan], status: SidecarStatus) -> None:
        self.config = config
        self.status = status
        self.directories = {p.workload: p.directory for p in plans if p.workload is not None}
        self.contexts: dict[int, X509Context | None] = {}
        for directory in self.directories.values():
            status.output_not_ready(directory, "waiting for the workload's identity")

    def __bool__(self) -> bool:
        return bool(self.directories)

    def decided(self) -> bool:
        """Every workload output has had a first verdict: an identity, or not ready and why."""
        return all(index in self.contexts for index in self.directories)

    async def run(self, own: AsyncX509Source, on_change: Callable[[], None], backoff: Backoff) -> None:
        """Follow every workload output until cancelled; a failed client is reported and restarted."""
        attempt = 0
        while True:
            await own.wait_for(None)  # the bridge's own SVID authenticates it to the agent
            try:
                async for update in workload_updates(self.config, own):
                    attempt = 0
                    self.apply(update)
                    on_change()
            except Exception as exc:  # e.g. no SVID matching broker.spiffe_id: the other outputs go on
                log.error("the Broker API client failed: %s", exc)
                failed = SpiffeBridgeError(f"the Broker API client failed: {exc}")  # not the workload's
                for index in self.directories:
                    self.apply(WorkloadUpdate(index, None, None, failed), quiet=True)
                on_change()
            attempt += 1
            await asyncio.sleep(backoff.delay(attempt))

    def apply(self, update: WorkloadUpdate, *, quiet: bool = False) -> None:
        """Hold ``update`` for its output and record that output's readiness."""
        directory = self.directories.get(update.index)
        if directory is None:
            return
        self.contexts[update.index] = update.context
        if update.context is None:
            reason = not_ready_reason(update)
            self.status.output_not_ready(directory, reason)
            if not quiet:
                log.warning("output %s is not ready (files kept as they are): %s", directory, reason)
        else:
            ids = capped(s.spiffe_id for s in update.context.svids)
            log.info("received X.509 update for the workload (pid %s) of %s: %s", update.pid, directory, ids)
