"""The daemon's output directories: write them all on the loop, make them durable off it.

Each directory (a :class:`~spiffe_bridge.sidecar.plan.DirPlan` with its
:class:`~spiffe_bridge.fileset.FileSetWriter`) is its own output: one that
cannot be rendered or written is logged and reported, and the others are
written all the same (#14.10). Writes skip fsync so the reload signal is not
held up by the disk; :meth:`Outputs.make_durable` then fsyncs (and prunes) in
one worker thread, and every later write or removal waits for that first, so
durability lags the signal by one fsync and the writers' locks are never
contended on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from spiffe_bridge.fileset import FileSetWriter
from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.sidecar.hot_updater import HotUpdater
from spiffe_bridge.sidecar.plan import DirPlan
from spiffe_bridge.sidecar.status import SidecarStatus
from spiffe_bridge.x509context import X509Context

if TYPE_CHECKING:  # broker mode loads the Broker API client only when used
    from spiffe_bridge.sidecar.broker_outputs import Issued

log = logging.getLogger("spiffe_bridge.sidecar")


class Outputs:
    """Every output directory of one daemon, with the single fsync worker they share."""

    def __init__(self, plans: Sequence[DirPlan], status: SidecarStatus) -> None:
        self.writers: list[tuple[DirPlan, FileSetWriter]] = [(p, p.writer()) for p in plans]
        self.status = status
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spiffe-bridge-fsync")
        self._syncing: asyncio.Future[None] | None = None
        #: servers told to take a directory's new files without a reload (reload_haproxy, ...)
        self.hot = HotUpdater([u for p in plans for u in p.updates], status.hot_updated)

    def links_replaced(self) -> int:
        """Links planted at an output file name that writes replaced (never followed), all outputs."""
        return sum(writer.links_replaced for _, writer in self.writers)

    async def settled(self) -> None:
        """Wait until the last write is durable (before the next swap replaces it)."""
        if self._syncing is not None:
            await asyncio.shield(self._syncing)  # a cancelled waiter must not cancel the fsync

    def write_all(
        self,
        ctx: X509Context | None,
        tokens: Mapping[str, JwtSvid],
        bundles: JwtBundleSet | None,
        workloads: Mapping[int, Issued] | None = None,
        *,
        own: bool = True,
    ) -> tuple[bool, list[str]]:
        """Render and write every directory (no fsync); (anything changed, failed directories).

        A broker-mode plan (``plan.workload`` set) is rendered from ``workloads[plan.workload]``
        (its workload's context and tokens), never from the bridge's own material; without an
        entry there (not ready: no context, or a token missing) it is left as it is.
        ``own`` False leaves the bridge's own outputs alone (its identity was withdrawn).
        """
        changed, failed = False, []
        for plan, writer in self.writers:
            if plan.workload is None and not own:
                continue
            if plan.workload is not None:
                theirs = (workloads or {}).get(plan.workload)
                if theirs is None:
                    continue  # not ready: the status says why (the runner recorded it)
                material: tuple[X509Context | None, Mapping[str, JwtSvid], JwtBundleSet | None]
                material = (theirs.context, theirs.tokens, None)
            else:
                material = (ctx, tokens, bundles)
            started = time.monotonic()
            try:
                files = plan.render(*material)
                if files and writer.write(files, durable=False).changed:
                    changed = True
                    if self.hot:  # returns at once: the updates run off the loop
                        self.hot.after_write(plan.directory, files)
                    seconds = time.monotonic() - started
                    fields = {"dir": plan.directory, "files": len(files), "duration_s": round(seconds, 6)}
                    log.info("wrote %d files to %s", len(files), plan.directory, extra=fields)
            except Exception as exc:  # any render or write failure is this output's alone
                seconds = time.monotonic() - started
                failed.append(plan.directory)
                self.status.output_failed(plan.directory, str(exc), seconds)
                fields = {"dir": plan.directory, "error": str(exc), "duration_s": round(seconds, 6)}
                log.error("writing %s failed (previous files kept): %s", plan.directory, exc, extra=fields)
            else:
                self.status.output_ok(plan.directory, time.monotonic() - started)
        return changed, failed

    def make_durable(self) -> None:
        """Start fsyncing (and pruning) what ``write_all`` left, on the worker thread."""
        self._syncing = asyncio.get_running_loop().run_in_executor(self._pool, self._sync_all)

    def _sync_all(self) -> None:
        for plan, writer in self.writers:
            try:
                writer.sync()
            except OSError as exc:
                msg = "could not fsync %s (files in place, maybe not on disk): %s"
                log.error(msg, plan.directory, exc, extra={"dir": plan.directory, "error": str(exc)})

    async def remove_own(self) -> None:
        """Delete the bridge's own outputs' files (the ``delete`` identity-lost policy).

        A broker-mode output holds another workload's identity, which the bridge losing its
        own does not withdraw: those files stay and keep being renewed.
        """
        await self.settled()
        for plan, writer in self.writers:
            if plan.workload is not None:
                continue
            try:
                writer.remove()
            except OSError as exc:
                log.error("could not remove the files in %s: %s", plan.directory, exc)

    def svid_expiry(
        self, ctx: X509Context | None, workloads: Mapping[int, Issued] | None = None
    ) -> float | None:
        """When the first X.509-SVID written to any output expires (epoch seconds).

        A workload output counts with its workload's context while it has one.
        """
        times = []
        for plan, _ in self.writers:
            theirs = None if plan.workload is None else (workloads or {}).get(plan.workload)
            held = ctx if plan.workload is None else theirs.context if theirs is not None else None
            if held is None:
                continue
            for out in plan.x509:
                try:
                    times.append(held.svid(hint=out.options.hint or None).expires_at.timestamp())
                except LookupError:
                    continue
        return min(times) if times else None

    async def close(self) -> None:
        """Wait for the last fsync (what was written is durable at exit) and stop the worker."""
        self.hot.stop()
        if self._syncing is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._syncing
        self._pool.shutdown(wait=True)
