"""Broker mode for the sidecar: the X.509 context and JWT-SVIDs of each output that references a workload.

``workload_updates(config, source)`` yields a ``WorkloadUpdate`` whenever an
output's workload gets a new X.509 context (write it, owned by that output's
uid) or stops having one (``context`` None: that output is not ready), and a
``TokenUpdate`` for each of the output's ``jwt_svids`` minted for that workload
(after its first X.509 context, then again at each half-life, through
:func:`.jwt_refresh.keep_fresh`; the refreshers end with the process's watch). One
``AsyncBrokerClient`` serves every output; ``source`` is the bridge's own
identity (``agent_address``), which authenticates it to the agent.

Per output: a fixed ``workload_pid``, or a ``workload_pid_file`` that is re-read
every ``poll_interval`` (a new PID restarts the subscription for it; a missing
or unreadable file means no workload yet). When the process exits the watch
ends and the output is not ready until the file names a live process again.
``fetch_once`` is the one-shot variant (NoIdentityError when any has none);
the daemon's state is :class:`.workload_feed.WorkloadFeed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from spiffe_bridge.broker import agent_authorizer
from spiffe_bridge.broker.aio import AsyncBrokerClient
from spiffe_bridge.errors import (
    NoIdentityError,
    SpiffeBridgeError,
    WorkloadApiError,
    WorkloadNotFoundError,
)
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.sidecar.config import BrokerConfig, Config, JwtSvidConfig, OutputConfig
from spiffe_bridge.sidecar.jwt_refresh import FETCH_TIMEOUT, keep_fresh
from spiffe_bridge.sidecar.plan import DirPlan
from spiffe_bridge.sources.protocols import X509SourceLike
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.tls.authorize import Authorizer, authorize_if
from spiffe_bridge.x509context import X509Context

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


@dataclass(frozen=True)
class TokenUpdate:
    """A fresh JWT-SVID of output ``index``'s workload ``pid``, for the entry writing ``file_name``.

    ``svid`` None: minting it failed (``error``; retried).
    """

    index: int
    pid: int
    file_name: str
    svid: JwtSvid | None
    error: Exception | None = None


@dataclass(frozen=True)
class Issued:
    """Everything one workload output is written from: its workload's context and tokens by file name."""

    context: X509Context
    tokens: Mapping[str, JwtSvid]


#: The ``jwt_svids`` entries to mint for each workload output, by ``outputs`` index.
TokenSpecs = Mapping[int, Sequence[JwtSvidConfig]]


def token_specs(plans: Sequence[DirPlan]) -> dict[int, tuple[JwtSvidConfig, ...]]:
    """Each workload plan's ``jwt_svids`` (merged outputs of one directory included), by its index."""
    return {p.workload: tuple(p.jwt_svids) for p in plans if p.workload is not None}


def _specs(config: Config, tokens: TokenSpecs | None, index: int) -> Sequence[JwtSvidConfig]:
    return config.outputs[index].jwt_svids if tokens is None else tokens.get(index, ())


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


Update = WorkloadUpdate | TokenUpdate


async def _follow(
    index: int,
    output: OutputConfig,
    specs: Sequence[JwtSvidConfig],
    client: AsyncBrokerClient,
    queue: asyncio.Queue[Update],
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
                    watch = asyncio.create_task(_subscribe(index, pid, specs, client, queue))
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
    index: int,
    pid: int,
    specs: Sequence[JwtSvidConfig],
    client: AsyncBrokerClient,
    queue: asyncio.Queue[Update],
) -> None:
    """Watch ``pid``'s X.509 contexts and keep its tokens fresh, until the process exits (or cancelled).

    The token refreshers start with the first context (the workload has an entry by then)
    and are stopped before the exit is reported, so no token of a gone process follows it.
    """

    def on_error(exc: Exception) -> None:
        if isinstance(exc, NoIdentityError):  # no registration entry for the workload (yet)
            queue.put_nowait(WorkloadUpdate(index, pid, None, exc))

    def deliver(spec: JwtSvidConfig, svid: JwtSvid) -> None:
        queue.put_nowait(TokenUpdate(index, pid, spec.file_name, svid))

    def refresher(spec: JwtSvidConfig) -> asyncio.Task[None]:
        async def fetch() -> JwtSvid:
            extra = spec.extra_audiences
            return await client.fetch_jwt_svid(pid, spec.audience, *extra, timeout=FETCH_TIMEOUT)

        def failed(exc: Exception) -> None:
            queue.put_nowait(TokenUpdate(index, pid, spec.file_name, None, exc))

        return asyncio.create_task(keep_fresh(fetch, spec, deliver, f"JWT-SVID of pid {pid}", failed))

    refreshers: list[asyncio.Task[None]] = []
    ended: Exception | None = None
    try:
        async for context in client.watch_x509_contexts(pid, on_error=on_error):
            if not refreshers:
                refreshers = [refresher(spec) for spec in specs]
            await queue.put(WorkloadUpdate(index, pid, context))
    except (WorkloadApiError, ValueError) as exc:  # the process exited, or a PID that cannot be one
        ended = exc
    finally:
        for task in refreshers:
            task.cancel()
        await asyncio.gather(*refreshers, return_exceptions=True)
    if ended is not None:
        await queue.put(WorkloadUpdate(index, pid, None, ended))


async def workload_updates(
    config: Config,
    source: X509SourceLike,
    *,
    tokens: TokenSpecs | None = None,
    poll_interval: float = POLL_INTERVAL,
) -> AsyncIterator[Update]:
    """Every change of every workload output's context, and each token minted, while the caller iterates.

    ``tokens``: the ``jwt_svids`` to mint per output (default: each output's own entries).
    """
    outputs = [(i, out) for i, out in enumerate(config.outputs) if out.workload]
    if not outputs:
        return
    queue: asyncio.Queue[Update] = asyncio.Queue()
    async with client_for(config, source) as client:
        tasks = [
            asyncio.create_task(_follow(i, out, _specs(config, tokens, i), client, queue, poll_interval))
            for i, out in outputs
        ]
        try:
            while True:
                yield await queue.get()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def fetch_once(
    config: Config, source: X509SourceLike, timeout: float, tokens: TokenSpecs | None = None
) -> dict[int, Issued]:
    """One-shot: the context and tokens of every workload output, waiting up to ``timeout`` for each.

    NoIdentityError (exit 4) when an output's workload has no identity (or no token) by
    then, its pid file names no PID, or the process does not exist.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    result: dict[int, Issued] = {}
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
                    context = await client.fetch_x509_context(pid, timeout=max(left, 0.1))
                    minted = {}
                    for spec in _specs(config, tokens, index):
                        audiences = (spec.audience, *spec.extra_audiences)
                        wait = max(deadline - loop.time(), 0.1)  # not ``left``: that decides when to give up
                        minted[spec.file_name] = await client.fetch_jwt_svid(pid, *audiences, timeout=wait)
                    result[index] = Issued(context, minted)
                    break
                except NoIdentityError:
                    if left <= 0:
                        raise
                await asyncio.sleep(min(POLL_INTERVAL, max(left, 0.0)))
    return result
