"""Typed per-output actions that update a running server without a reload: their configuration.

An ``outputs`` entry may carry ``reload_haproxy``, ``reload_postgres`` and/or
``reload_mysql`` (and ``restart_command``, :mod:`.restart`, for a consumer that
must be restarted instead). ``OUTPUT_KEYS`` declares the keys (``reload_*``,
``haproxy_*``) with their types, defaults and meanings; ``from_output`` turns an entry
into ``HotUpdate`` s, which :mod:`.hot_updater` runs after each changed write.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spiffe_bridge.formats import X509Options
from spiffe_bridge.sidecar import restart
from spiffe_bridge.sidecar.schema import ConfigError, Key, where
from spiffe_bridge.updaters import UpdatePolicy

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
