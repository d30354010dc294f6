"""The daemon's broker-mode outputs: what each one holds now, and whether it is ready (docs/broker.md).

:class:`WorkloadFeed` applies the updates of :func:`.broker_outputs.workload_updates`:
each workload output's current X.509 context and the tokens of its current process.
An output is ready to write once it has its context and every one of its tokens;
until then the sidecar status says why not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from spiffe_bridge.errors import NoIdentityError, SpiffeBridgeError
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.loglist import capped
from spiffe_bridge.retry import Backoff
from spiffe_bridge.sidecar.broker_outputs import (
    Issued,
    TokenUpdate,
    Update,
    WorkloadUpdate,
    not_ready_reason,
    token_specs,
    workload_updates,
)
from spiffe_bridge.sidecar.config import Config
from spiffe_bridge.sidecar.plan import DirPlan
from spiffe_bridge.sidecar.status import SidecarStatus
from spiffe_bridge.sources import AsyncX509Source
from spiffe_bridge.x509context import X509Context

log = logging.getLogger("spiffe_bridge.sidecar.broker")


class WorkloadFeed:
    """The daemon's workload outputs: each one's current context and tokens, and its readiness in ``status``.

    ``contexts[index]`` is what output ``index`` should hold (None: not ready, files kept);
    an index is absent until its first verdict. ``tokens[index]`` are the JWT-SVIDs of
    that workload's current process (dropped when it exits or another PID is followed).
    ``on_change`` is called on the loop after every update, to have the outputs written.
    """

    def __init__(self, config: Config, plans: Sequence[DirPlan], status: SidecarStatus) -> None:
        self.config = config
        self.status = status
        self.directories = {p.workload: p.directory for p in plans if p.workload is not None}
        self.specs = token_specs(plans)
        self.contexts: dict[int, X509Context | None] = {}
        self.tokens: dict[int, dict[str, JwtSvid]] = {}
        self.pids: dict[int, int | None] = {}
        #: why a token of the current process could not be minted (yet), by file name
        self.token_errors: dict[int, dict[str, Exception]] = {}
        for directory in self.directories.values():
            status.output_not_ready(directory, "waiting for the workload's identity")

    def __bool__(self) -> bool:
        return bool(self.directories)

    def decided(self) -> bool:
        """Every workload output has had a first verdict: its identity (and tokens), or not ready and why."""
        ready = self.ready()

        def verdict(index: int) -> bool:
            if index not in self.contexts:
                return False
            if self.contexts[index] is None or index in ready:
                return True
            tokens, errors = self.tokens.get(index, {}), self.token_errors.get(index, {})
            return all(s.file_name in tokens or s.file_name in errors for s in self.specs.get(index, ()))

        return all(verdict(index) for index in self.directories)

    def ready(self) -> dict[int, Issued]:
        """What each output that can be written now holds: a context and every one of its tokens."""
        held = {}
        for index, context in self.contexts.items():
            tokens = self.tokens.get(index, {})
            if context is not None and all(s.file_name in tokens for s in self.specs.get(index, ())):
                held[index] = Issued(context, dict(tokens))
        return held

    async def run(self, own: AsyncX509Source, on_change: Callable[[], None], backoff: Backoff) -> None:
        """Follow every workload output until cancelled; a failed client is reported and restarted."""
        attempt = 0
        while True:
            await own.wait_for(None)  # the bridge's own SVID authenticates it to the agent
            try:
                async for update in workload_updates(self.config, own, tokens=self.specs):
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

    def apply(self, update: Update, *, quiet: bool = False) -> None:
        """Hold ``update`` for its output and record that output's readiness."""
        directory = self.directories.get(update.index)
        if directory is None:
            return
        if isinstance(update, TokenUpdate):
            if update.pid != self.pids.get(update.index) or self.contexts.get(update.index) is None:
                return  # minted for a process no longer followed (or gone): never written
            errors = self.token_errors.setdefault(update.index, {})
            if update.svid is None:
                errors[update.file_name] = update.error or SpiffeBridgeError("no JWT-SVID")
                self._waiting_for_tokens(update.index, directory)  # a token held stays valid: still ready
                return
            errors.pop(update.file_name, None)
            self.tokens.setdefault(update.index, {})[update.file_name] = update.svid
            log.info(
                "received JWT-SVID %s for the workload (pid %s) of %s",
                update.file_name,
                update.pid,
                directory,
            )
            self._waiting_for_tokens(update.index, directory)
            return
        if update.pid != self.pids.get(update.index) or not isinstance(update.error, NoIdentityError | None):
            self.tokens.pop(update.index, None)  # another process, or this one exited: its tokens are void
            self.token_errors.pop(update.index, None)
        self.pids[update.index] = update.pid
        self.contexts[update.index] = update.context
        if update.context is None:
            reason = not_ready_reason(update)
            self.status.output_not_ready(directory, reason)
            if not quiet:
                log.warning("output %s is not ready (files kept as they are): %s", directory, reason)
        else:
            ids = capped(s.spiffe_id for s in update.context.svids)
            log.info("received X.509 update for the workload (pid %s) of %s: %s", update.pid, directory, ids)
            self._waiting_for_tokens(update.index, directory)

    def _waiting_for_tokens(self, index: int, directory: str) -> None:
        """Written (and so ready) only once every token is there too; else say which one is missing."""
        if index in self.ready():
            return
        tokens, errors = self.tokens.get(index, {}), self.token_errors.get(index, {})
        missing = [s.file_name for s in self.specs.get(index, ()) if s.file_name not in tokens]
        failed = [name for name in missing if name in errors]
        if failed:
            self.status.output_not_ready(directory, f"no JWT-SVID for {failed[0]}: {errors[failed[0]]}")
        else:
            self.status.output_not_ready(directory, "waiting for the workload's JWT-SVIDs")
