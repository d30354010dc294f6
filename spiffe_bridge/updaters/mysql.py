"""reload_mysql: make MySQL or MariaDB re-read their TLS files without a restart.

MySQL 8.0.16 and newer take ``ALTER INSTANCE RELOAD TLS``; MariaDB 10.4 and newer
``FLUSH SSL``. The statement is chosen from ``SELECT VERSION()``; older servers
get a non-retryable error. New connections get the new certificate, established
ones keep theirs. The DSN is ``mysql://user[:password]@host[:port]/`` or
``mysql://user@localhost/?unix_socket=/run/mysqld/mysqld.sock``; a
``password_file=`` query parameter keeps the password out of the config. The
account needs RELOAD (MariaDB) or CONNECTION_ADMIN (MySQL). PyMySQL (the
``mysql`` extra) is blocking, so each attempt runs in a worker thread with
socket timeouts: the event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from spiffe_bridge.updaters.policy import UpdateError, UpdatePolicy, with_retries

ACTION = "reload_mysql"
MYSQL_MIN = (8, 0, 16)
MARIADB_MIN = (10, 4, 0)


@dataclass(frozen=True)
class Dsn:
    """Connection parameters parsed from a ``mysql://`` DSN."""

    user: str
    password: str | None = field(default=None, repr=False)
    host: str = "localhost"
    port: int = 3306
    unix_socket: str | None = None

    @classmethod
    def parse(cls, text: str) -> Dsn:
        """Parse the DSN (ValueError naming what is wrong); reads ``password_file`` if given."""
        parts = urlsplit(text)
        if parts.scheme not in ("mysql", "mariadb") or not parts.username:
            raise ValueError("reload_mysql wants mysql://user[:password]@host[:port]/[?unix_socket=PATH]")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"unix_socket", "password_file"}
        if unknown:
            raise ValueError(f"reload_mysql: unknown DSN parameter(s) {', '.join(sorted(unknown))}")
        password = unquote(parts.password) if parts.password is not None else None
        if "password_file" in query:
            with open(query["password_file"], encoding="utf-8") as fh:
                password = fh.read().rstrip("\r\n")
        return cls(
            user=unquote(parts.username),
            password=password,
            host=parts.hostname or "localhost",
            port=parts.port or 3306,
            unix_socket=query.get("unix_socket"),
        )

    def __str__(self) -> str:
        where = self.unix_socket or f"{self.host}:{self.port}"
        return f"mysql://{self.user}@{where}"


def reload_statement(version: str) -> str:
    """The TLS reload statement for a ``SELECT VERSION()`` answer (UpdateError if none exists)."""
    found = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    numbers = tuple(int(n) for n in found.groups()) if found else (0, 0, 0)
    if "mariadb" in version.lower():
        if numbers >= MARIADB_MIN:
            return "FLUSH SSL"
        raise UpdateError(ACTION, version, "MariaDB reloads TLS only from 10.4 on", retryable=False)
    if numbers >= MYSQL_MIN:
        return "ALTER INSTANCE RELOAD TLS"
    raise UpdateError(ACTION, version, "MySQL reloads TLS only from 8.0.16 on", retryable=False)


def _reload(dsn: Dsn, timeout: float) -> str:
    import pymysql

    seconds = max(1, int(timeout))
    kwargs: dict[str, Any] = {"user": dsn.user, "password": dsn.password or "", "connect_timeout": seconds}
    kwargs |= {"read_timeout": seconds, "write_timeout": seconds, "autocommit": True}
    if dsn.unix_socket:
        kwargs["unix_socket"] = dsn.unix_socket
    else:
        kwargs |= {"host": dsn.host, "port": dsn.port}
    try:
        conn = pymysql.connect(**kwargs)
    except pymysql.err.OperationalError as exc:
        # access denied (1044, 1045, and 1698 for an unknown user): a new attempt is denied too
        retryable = exc.args[0] not in (1044, 1045, 1698)
        raise UpdateError(ACTION, str(dsn), f"cannot connect: {exc.args[-1]}", retryable=retryable) from None
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT VERSION()")
            row = cursor.fetchone()
            statement = reload_statement(str(row[0]) if row else "")
            try:
                cursor.execute(statement)
            except pymysql.err.MySQLError as exc:
                # 1227: lacks the privilege; 1064: the server does not know the statement
                retryable = exc.args[0] not in (1227, 1064)
                raise UpdateError(
                    ACTION, str(dsn), f"{statement}: {exc.args[-1]}", retryable=retryable
                ) from None
        return statement
    finally:
        conn.close()


async def apply(dsn: str, *, policy: UpdatePolicy | None = None) -> str:
    """Run the server's TLS reload statement; returns the statement used."""
    policy = policy or UpdatePolicy()
    parsed = Dsn.parse(dsn)
    try:
        import pymysql  # noqa: F401
    except ImportError:
        reason = "PyMySQL is not installed (pip install 'spiffe-bridge[mysql]')"
        raise UpdateError(ACTION, str(parsed), reason, retryable=False) from None

    async def once() -> str:
        return await asyncio.to_thread(_reload, parsed, policy.timeout)

    return await with_retries(ACTION, str(parsed), once, policy)
