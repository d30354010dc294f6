"""reload_postgres: ``SELECT pg_reload_conf()`` after the write, so new connections get the new certificate.

PostgreSQL re-reads ``ssl_cert_file``, ``ssl_key_file`` and ``ssl_ca_file`` on a
configuration reload; established sessions keep theirs. The key file must belong
to the server's user with mode 0600 (set uid and gid on the output). ``conninfo``
is a libpq connection string or URI; the role needs ``pg_reload_conf`` rights
(a superuser, or ``GRANT EXECUTE ON FUNCTION pg_reload_conf() TO ...``). Needs the
``postgres`` extra (psycopg 3), imported only here.
"""

from __future__ import annotations

import re

from spiffe_bridge.updaters.policy import UpdateError, UpdatePolicy, with_retries

ACTION = "reload_postgres"


def describe(conninfo: str) -> str:
    """The connection string without its password, for logs and errors."""
    masked = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", conninfo, flags=re.I)
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", masked)


async def apply(conninfo: str, *, policy: UpdatePolicy | None = None) -> None:
    """Ask the server to reload its configuration (and with it the TLS files)."""
    policy = policy or UpdatePolicy()
    target = describe(conninfo)
    try:
        import psycopg
    except ImportError:
        raise UpdateError(
            ACTION,
            target,
            "psycopg is not installed (pip install 'spiffe-bridge[postgres]')",
            retryable=False,
        ) from None

    async def once() -> None:
        try:
            conn = await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, connect_timeout=max(1, int(policy.timeout))
            )
        except psycopg.OperationalError as exc:
            raise UpdateError(ACTION, target, f"cannot connect: {str(exc).strip()}") from None
        async with conn:
            try:
                cursor = await conn.execute("SELECT pg_reload_conf()")
                row = await cursor.fetchone()
            except psycopg.errors.InsufficientPrivilege as exc:
                raise UpdateError(ACTION, target, str(exc).strip(), retryable=False) from None
            except psycopg.Error as exc:
                raise UpdateError(ACTION, target, str(exc).strip()) from None
        if not row or row[0] is not True:
            raise UpdateError(ACTION, target, "pg_reload_conf() did not return true")

    await with_retries(ACTION, target, once, policy)
