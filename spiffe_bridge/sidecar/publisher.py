"""The daemon's rotation pipeline: the latest identities, written out by one task, then the reload.

Updates only note what changed (``queue``) and wake the publisher task, which
handles them in arrival order; a write is plain synchronous code between two
awaits, so a signal is handled after the write in progress, two writes never
overlap, and the reload action runs only once every file of an update is in
place. The first reload and ``READY=1`` wait for every output: the bridge's
own, and a first verdict on every broker-mode workload output (written, or not
ready and why), so a workload started after the bridge does not hold it up.
A failed write is tried again with backoff even when the agent sends nothing
new (the disk may free up first).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.sdnotify import notify
from spiffe_bridge.sidecar import actions as act
from spiffe_bridge.sidecar.config import Config
from spiffe_bridge.sidecar.outputs import Outputs
from spiffe_bridge.sidecar.status import SidecarStatus
from spiffe_bridge.sidecar.streamlog import log_reload
from spiffe_bridge.sidecar.workload_feed import WorkloadFeed
from spiffe_bridge.x509context import X509Context

log = logging.getLogger("spiffe_bridge.sidecar")

#: Backoff for re-trying a failed write (disk full, read-only) without a new update.
WRITE_RETRY_FIRST, WRITE_RETRY_MAX = 0.5, 30.0


def jwt_path(config: Config, file_name: str) -> str:
    """Where one of the sidecar's own JWT files goes: ``cert_dir`` joined with its name."""
    return os.path.join(config.cert_dir, file_name)


def jwt_paths(config: Config) -> list[str]:
    """spiffe-helper's health keys for JWT files: the path of each configured JWT file."""
    names = [j.file_name for j in config.jwt_svids]
    if config.jwt_bundle_file_name:
        names.append(config.jwt_bundle_file_name)
    return [jwt_path(config, n) for n in names]


class Publisher:
    """Holds the latest X.509 context, JWT bundles and tokens; one task writes them and reloads.

    The daemon's event handlers set ``ctx``, ``bundles``, ``tokens`` and ``lost``
    (the streams whose identity the agent withdrew), then call ``queue``.
    """

    def __init__(
        self,
        config: Config,
        status: SidecarStatus,
        outputs: Outputs,
        workloads: WorkloadFeed,
        actions: act.Actions,
    ) -> None:
        self.config = config
        self.status = status
        self.outputs = outputs
        self.workloads = workloads
        self.actions = actions
        self.ctx: X509Context | None = None
        self.bundles: JwtBundleSet | None = None
        self.tokens: dict[str, JwtSvid] = {}
        self.lost: set[str] = set()
        self.completed_once = False
        self.pending_change = False
        #: set on shutdown (or while a wrapped child stops): nothing more is queued or written
        self.stopping = False
        self._wake: asyncio.Event | None = None
        self._pending: dict[str, list[str]] = {}  # kind -> JWT paths, in arrival order
        self._retry: asyncio.TimerHandle | None = None
        self._retry_delay = WRITE_RETRY_FIRST

    def start(self) -> asyncio.Task[None]:
        """The publisher task, on the running loop."""
        self._wake = asyncio.Event()
        return asyncio.create_task(self._run(), name="spiffe-bridge-publisher")

    def stop(self) -> None:
        """Queue and write nothing more; drop a scheduled retry."""
        self.stopping = True
        if self._retry is not None:
            self._retry.cancel()

    def jwt_path(self, file_name: str) -> str:
        """Where one of the sidecar's own JWT files goes."""
        return jwt_path(self.config, file_name)

    def queue(self, kind: str, paths: list[str]) -> None:
        """Note what changed and wake the publisher (which handles kinds in arrival order)."""
        if self.stopping:
            return
        self._pending.setdefault(kind, []).extend(p for p in paths if p not in self._pending.get(kind, []))
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and not self.stopping:
                kind = next(iter(self._pending))
                paths = self._pending.pop(kind)
                try:
                    if kind == "delete":
                        await self._remove_files()
                    else:
                        await self.publish(kind, paths)
                except Exception:  # a bug here must not end the daemon: report, retry later
                    log.exception("publishing the %s files failed", kind)
                    self.status.write_failed(x509=kind == "x509", jwt_paths=paths)
                    self._schedule_retry(kind)

    def _complete(self) -> bool:
        if self.config.needs_x509 and self.ctx is None:
            return False
        if self.config.jwt_bundle_file_name and self.bundles is None:
            return False
        if not self.workloads.decided():
            return False
        return all(j.file_name in self.tokens for j in self.config.jwt_svids)

    async def publish(self, kind: str, paths: list[str]) -> None:
        """Write every directory, run the reload action once all is in place, then fsync off the loop."""
        if self.lost and self.config.on_identity_lost == "delete":
            log.info("identity lost: not writing the bridge's own outputs until it is back")
            await self.outputs.settled()
            changed, _ = self.outputs.write_all(None, {}, None, self.workloads.ready(), own=False)
            if changed:
                self.outputs.make_durable()
            return
        await self.outputs.settled()  # the previous set is durable before this one replaces it
        held = self.workloads.ready()  # each workload output's context and tokens, taken once
        changed, failed = self.outputs.write_all(self.ctx, self.tokens, self.bundles, held)
        if changed:
            self.outputs.make_durable()  # after the swap, off the loop; the reload does not wait
        self.pending_change = self.pending_change or changed
        if failed:
            log.error("retrying in %gs", self._retry_delay, extra={"failed_dirs": ", ".join(failed)})
            self.status.write_failed(x509=kind == "x509", jwt_paths=paths)
            self._schedule_retry(kind)
        else:
            self._retry_delay = WRITE_RETRY_FIRST
            written = [self.jwt_path(n) for n in self.tokens]
            if self.bundles is not None and self.config.jwt_bundle_file_name:
                written.append(self.jwt_path(self.config.jwt_bundle_file_name))
            jwt_expiry = {self.jwt_path(name): float(svid.expiry) for name, svid in self.tokens.items()}
            self.status.wrote(
                x509=self.ctx is not None,
                jwt_paths=written,
                svid_expiry=self.outputs.svid_expiry(self.ctx, held),
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
        if self._retry is not None or self.stopping:
            return

        def retry() -> None:
            self._retry = None
            self.queue(kind, [])

        self._retry = asyncio.get_running_loop().call_later(self._retry_delay, retry)
        self._retry_delay = min(self._retry_delay * 2, WRITE_RETRY_MAX)

    async def _remove_files(self) -> None:
        await self.outputs.remove_own()
        self.status.files_removed()
        log.warning("removed the bridge's own output files (on_identity_lost = delete)")
