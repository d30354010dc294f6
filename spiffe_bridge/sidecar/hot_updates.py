"""Typed per-output actions that update a running server without a reload: config and dispatch.

An ``outputs`` entry may carry ``reload_haproxy``, ``reload_postgres`` and/or
``reload_mysql`` (and ``restart_command``, :mod:`.restart`, for a consumer that
must be restarted instead). After the entry's directory was written with changed content,
each configured updater (``spiffe_bridge.updaters``) runs on a private event
loop thread, so the daemon never waits for a server: per update the newest files
win (a backlog collapses into one run), and every outcome is recorded in the
sidecar status (health JSON and metrics). ``OUTPUT_KEYS`` declares the keys
(``reload_*``, ``haproxy_*``) with their types, defaults and meanings.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from spiffe_bridge.fileset import FileSpec
from spiffe_bridge.formats import X509Options
from spiffe_bridge.sidecar import restart
from spiffe_bridge.sidecar.schema import ConfigError, Key, where
from spiffe_bridge.updaters import UpdateError, UpdatePolicy

log = logging.getLogger("spiffe_bridge.sidecar")

ACTIONS = ("reload_haproxy", "reload_postgres", "reload_mysql")
#: Output keys read here rather than passed to the format; docs/sidecar.md's table shows them.
#: The ``haproxy_*`` keys belong to format ``combined`` (HAProxy's crt file), the rest to every format.
OUTPUT_KEYS = (
    Key(
        "reload_haproxy",
        "str",
        "",
        "HAProxy runtime API (`unix:///run/haproxy/admin.sock` or `tcp://IP:port`, `level admin`). In "
        "daemon mode, after each changed write: `set ssl cert` + `commit ssl cert` with the combined file, "
        "no reload (format `combined` only). See [consumers/haproxy.md](consumers/haproxy.md).",
        ours=True,
    ),
    Key(
        "haproxy_cert_path",
        "str",
        "",
        "The `crt` path as HAProxy's own config names it.",
        ours=True,
        shown="the combined file's visible path",
    ),
    Key(
        "haproxy_ca_file_path",
        "str",
        "",
        "The `ca-file` path HAProxy names; pushed with `set/commit ssl ca-file` (HAProxy ≥ 2.5) only "
        "when its content changed.",
        ours=True,
        shown="the bundle file's visible path",
    ),
    Key("haproxy_update_ca_file", "bool", True, "`false`: never push the CA file.", ours=True),
    Key(
        "reload_postgres",
        "str",
        "",
        "libpq conninfo; runs `SELECT pg_reload_conf()` after each changed write (needs `pip install "
        "'spiffe-bridge[postgres]'`). Set `uid`/`gid` to the server's user: PostgreSQL wants its key "
        "owned by itself, 0600. See [consumers/postgresql.md](consumers/postgresql.md).",
        ours=True,
    ),
    Key(
        "reload_mysql",
        "str",
        "",
        "`mysql://user[:password]@host[:port]/[?unix_socket=PATH&password_file=PATH]`; runs `FLUSH SSL` "
        "(MariaDB ≥ 10.4) or `ALTER INSTANCE RELOAD TLS` (MySQL ≥ 8.0.16), chosen from the server's "
        "version (needs `pip install 'spiffe-bridge[mysql]'`). See [consumers/mysql.md](consumers/mysql.md).",
        ours=True,
    ),
    Key(
        "reload_timeout",
        "number",
        UpdatePolicy.timeout,
        "Per-attempt timeout (seconds) of the `reload_*` actions above. They run on their own event loop "
        "thread: the daemon never waits for a server; a failure is logged, counted (`hot_updates` in the "
        "health JSON, `spiffe_bridge_hot_update_failures`) and tried again after 30 s (doubling up to "
        "5 min) or with the next change, whichever comes first; a refusal no retry can mend (HAProxy: "
        "an unknown certificate path) waits for the next change.",
        ours=True,
    ),
    Key(
        "reload_attempts",
        "int",
        UpdatePolicy.attempts,
        "Attempts of each `reload_*` action, with backoff between them.",
        ours=True,
    ),
    *restart.OUTPUT_KEYS,
)
KEYS = frozenset(key.name for key in OUTPUT_KEYS)
_RELOAD_KEYS = KEYS - restart.KEYS
_DEFAULT = {key.name: key.default for key in OUTPUT_KEYS}
_HAPROXY_KEYS = ("reload_haproxy", "haproxy_cert_path", "haproxy_ca_file_path", "haproxy_update_ca_file")


@dataclass(frozen=True)
class HotUpdate:
    """One configured updater of one output directory."""

    action: str
    target: str
    directory: str
    policy: UpdatePolicy
    cert_file: str = ""  # haproxy: the combined file's name in the set
    ca_file: str = ""  # haproxy: the bundle file's name in the set ("" = never push it)
    haproxy_cert_path: str = ""
    haproxy_ca_file_path: str = ""
    argv: tuple[str, ...] = ()  # restart_command: the command (``target`` is it joined, for the label)

    @property
    def label(self) -> str:
        """``action target`` with no secret in it (conninfo/DSN passwords are masked)."""
        if self.action == restart.ACTION:
            return f"{self.action} {self.target}"
        from spiffe_bridge.updaters import postgres

        return f"{self.action} {postgres.describe(self.target)}"


def _value(
    options: Mapping[str, Any], key: str, kind: type, lines: Mapping[str, int], line: int | None
) -> Any:
    value = options[key]
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where(key, lines.get(key, line))} must be a {kind.__name__}, got {value!r}")
    return value


def from_output(
    fmt: str,
    directory: str,
    options: Mapping[str, Any],
    x509: X509Options,
    lines: Mapping[str, int],
    line: int | None,
) -> list[HotUpdate]:
    """The updaters an ``outputs`` entry asks for; ConfigError (key and line) when misconfigured."""
    out: list[HotUpdate] = []
    restarting = restart.from_output(options, lines, line)
    if restarting is not None:
        argv, timeout = restarting
        policy = UpdatePolicy(timeout=timeout, attempts=1)
        out.append(HotUpdate(restart.ACTION, shlex.join(argv), directory, policy, argv=argv))
    haproxy = [k for k in _HAPROXY_KEYS if k in options]
    if haproxy and fmt != "combined":
        at = where(haproxy[0], lines.get(haproxy[0], line))
        raise ConfigError(f'{at} needs format = "combined" (HAProxy\'s crt file), not {fmt!r}')
    if not any(k in options for k in ACTIONS):
        stray = sorted(k for k in options if k in _RELOAD_KEYS)
        if stray:
            raise ConfigError(
                f"{where(stray[0], lines.get(stray[0], line))} needs one of {', '.join(ACTIONS)}"
            )
        return out
    given = {"timeout": ("reload_timeout", float), "attempts": ("reload_attempts", int)}
    policy_args = {arg: _value(options, k, t, lines, line) for arg, (k, t) in given.items() if k in options}
    try:
        policy = UpdatePolicy(**policy_args)
    except ValueError as exc:
        raise ConfigError(f"{where('reload_timeout', lines.get('reload_timeout', line))}: {exc}") from None
    for action in ACTIONS:
        if action not in options:
            continue
        target = _value(options, action, str, lines, line)
        at = where(action, lines.get(action, line))
        if action == "reload_haproxy":
            out.append(_haproxy(target, at, directory, options, x509, policy, lines, line))
        elif action == "reload_postgres":
            if not target.strip():
                raise ConfigError(f"{at} must be a libpq connection string")
            out.append(HotUpdate(action, target, directory, policy))
        else:
            from spiffe_bridge.updaters.mysql import Dsn

            try:
                Dsn.parse(target)
            except (ValueError, OSError) as exc:
                raise ConfigError(f"{at}: {exc}") from None
            out.append(HotUpdate(action, target, directory, policy))
    return out


def _haproxy(
    target: str,
    at: str,
    directory: str,
    options: Mapping[str, Any],
    x509: X509Options,
    policy: UpdatePolicy,
    lines: Mapping[str, int],
    line: int | None,
) -> HotUpdate:
    from spiffe_bridge.updaters.haproxy import Address

    try:
        Address.parse(target)
    except ValueError as exc:
        raise ConfigError(f"{at}: {exc}") from None
    get = {
        k: _value(options, k, str, lines, line)
        for k in ("haproxy_cert_path", "haproxy_ca_file_path")
        if k in options
    }
    push_ca = (
        _value(options, "haproxy_update_ca_file", bool, lines, line)
        if "haproxy_update_ca_file" in options
        else _DEFAULT["haproxy_update_ca_file"]
    )
    return HotUpdate(
        "reload_haproxy",
        target,
        directory,
        policy,
        cert_file=x509.combined_file_name,
        ca_file=x509.svid_bundle_file_name if push_ca else "",
        haproxy_cert_path=get.get("haproxy_cert_path") or os.path.join(directory, x509.combined_file_name),
        haproxy_ca_file_path=get.get("haproxy_ca_file_path")
        or os.path.join(directory, x509.svid_bundle_file_name),
    )


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
