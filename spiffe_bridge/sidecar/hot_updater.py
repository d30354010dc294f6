"""Runs the ``HotUpdate`` s of the written directories, off the daemon's loop.

After an output's directory was written with changed content, each configured updater
(``spiffe_bridge.updaters``, or the restart command) runs on a private event loop
thread, so the daemon never waits for a server: per update the newest files win (a
backlog collapses into one run), and every outcome is recorded in the sidecar status
(health JSON and metrics).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future

from spiffe_bridge.fileset import FileSpec
from spiffe_bridge.sidecar import restart
from spiffe_bridge.sidecar.hot_updates import HotUpdate
from spiffe_bridge.updaters import UpdateError

log = logging.getLogger("spiffe_bridge.sidecar")


#: A failed update is tried again after this many seconds, doubling up to RETRY_MAX.
RETRY_FIRST, RETRY_MAX = 30.0, 300.0
#: Called with (action, label, error or None) after every run.
Recorder = Callable[[str, str, "str | None"], None]


class HotUpdater:
    """Runs the updaters on a private event loop thread; ``after_write`` returns at once.

    Per update one run at a time; files arriving meanwhile replace each other, so a
    slow server gets only the newest set. A run that failed (the server was down, say)
    is tried again after ``RETRY_FIRST`` seconds, doubling up to ``RETRY_MAX``, unless
    newer files came meanwhile; one the server refused for good (``retryable`` False:
    a bad path, say) waits for the next files instead. An asyncio daemon can ``await run(...)`` directly
    instead of using the thread.
    """

    def __init__(self, updates: Sequence[HotUpdate], record: Recorder) -> None:
        self.updates = list(updates)
        self._record = record
        self._lock = threading.Condition()
        self._pending: dict[HotUpdate, Sequence[FileSpec]] = {}
        self._busy: set[HotUpdate] = set()
        self._pushed_ca: dict[HotUpdate, bytes] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._futures: list[Future[None]] = []
        self._generation: dict[HotUpdate, int] = {}
        self._retry_delay: dict[HotUpdate, float] = {}
        self._retries: dict[HotUpdate, asyncio.TimerHandle] = {}
        #: restart_command: what each directory held before this run's first write into it
        self._before = {u: restart.names_in(u.directory) for u in self.updates if u.action == restart.ACTION}

    def __bool__(self) -> bool:
        return bool(self.updates)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=loop.run_forever, name="spiffe-bridge-updaters", daemon=True
            )
            self._thread.start()
            self._loop = loop
        return self._loop

    def after_write(self, directory: str, files: Sequence[FileSpec]) -> None:
        """Schedule every update of ``directory`` with the set just written (never blocks)."""
        for update in self.updates:
            if update.directory == directory:
                before = self._before.pop(update, None)
                if before is not None and restart.creates(before, [f.name for f in files]):
                    log.info("%s: not run, the files were created (not changed)", update.label)
                    continue
                with self._lock:
                    self._generation[update] = self._generation.get(update, 0) + 1
                self._submit(update, list(files))

    def _submit(self, update: HotUpdate, files: Sequence[FileSpec]) -> None:
        with self._lock:
            self._pending[update] = files
            start = update not in self._busy
            self._busy.add(update)
        if start:
            future = asyncio.run_coroutine_threadsafe(self._drain(update), self._ensure_loop())
            self._futures = [f for f in self._futures if not f.done()] + [future]

    def retry_pending(self, update: HotUpdate) -> bool:
        """Whether a failed run of ``update`` is scheduled to be tried again."""
        handle = self._retries.get(update)
        return handle is not None and not handle.cancelled()

    def _retry(self, update: HotUpdate, files: Sequence[FileSpec], generation: int) -> None:
        self._retries.pop(update, None)
        with self._lock:
            stale = self._generation.get(update) != generation or update in self._pending
        if not stale:  # newer files were handed over meanwhile: they are the ones to push
            self._submit(update, files)

    async def _drain(self, update: HotUpdate) -> None:
        while True:
            with self._lock:
                files = self._pending.pop(update, None)
                generation = self._generation.get(update, 0)
                if files is None:
                    self._busy.discard(update)
                    self._lock.notify_all()
                    return
            failure = await self._run(update, files)
            if failure is None:
                self._retry_delay.pop(update, None)
                continue
            if isinstance(failure, UpdateError) and not failure.retryable:
                log.info("%s: not trying again until new files are written", update.label)
                continue
            delay = self._retry_delay.get(update, RETRY_FIRST)
            self._retry_delay[update] = min(delay * 2, RETRY_MAX)
            log.info("%s: trying again in %gs", update.label, delay)
            loop = asyncio.get_running_loop()
            self._retries[update] = loop.call_later(delay, self._retry, update, files, generation)

    async def run(self, update: HotUpdate, files: Sequence[FileSpec]) -> bool:
        """Apply one update for this file set; records and logs the outcome, never raises."""
        return await self._run(update, files) is None

    async def _run(self, update: HotUpdate, files: Sequence[FileSpec]) -> Exception | None:
        """``run``, returning the failure (None when the server took the files)."""
        try:
            await self._apply(update, {f.name: f.data for f in files})
        except UpdateError as exc:
            log.error("%s failed after %d attempt(s): %s", update.action, exc.attempts, exc.reason)
            self._record(update.action, update.label, str(exc))
            return exc
        except Exception as exc:  # a bug or an unexpected library error: keep the daemon going
            log.exception("%s failed", update.label)
            self._record(update.action, update.label, f"{type(exc).__name__}: {exc}")
            return exc
        if update.action != restart.ACTION:  # the command logged its own success
            log.info("%s: the server took the new credentials", update.label)
        self._record(update.action, update.label, None)
        return None

    async def _apply(self, update: HotUpdate, files: Mapping[str, bytes]) -> None:
        if update.action == restart.ACTION:
            reason = await restart.run(update.argv, update.policy.timeout)
            if reason is not None:
                error = UpdateError(update.action, update.target, reason)
                error.attempts = 1
                raise error
        elif update.action == "reload_haproxy":
            from spiffe_bridge.updaters import haproxy

            crt = files.get(update.cert_file)
            if crt is None:
                raise UpdateError(
                    update.action, update.target, f"{update.cert_file} is not in the written set"
                )
            ca = files.get(update.ca_file) if update.ca_file else None
            digest = hashlib.sha256(ca).digest() if ca is not None else b""
            push_ca = ca is not None and self._pushed_ca.get(update) != digest
            await haproxy.apply(
                update.target,
                update.haproxy_cert_path,
                crt,
                ca_path=update.haproxy_ca_file_path if push_ca else None,
                ca_pem=ca if push_ca else None,
                policy=update.policy,
            )
            if push_ca:
                self._pushed_ca[update] = digest
        elif update.action == "reload_postgres":
            from spiffe_bridge.updaters import postgres

            await postgres.apply(update.target, policy=update.policy)
        else:
            from spiffe_bridge.updaters import mysql

            await mysql.apply(update.target, policy=update.policy)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no update is running or pending (tests, shutdown); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._busy, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Let running updates finish (bounded), then end the loop thread."""
        self.wait_idle(timeout)
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                loop.close()
        self._loop = self._thread = None
