"""reload_postgres and reload_mysql against the real Debian PostgreSQL and MariaDB servers.

Each test writes PEM files owned by the server's user (key 0600), starts the server
(see db_servers), rotates the files with the production writer, runs the updater
and checks with ``openssl s_client -starttls`` that a new connection gets the new
certificate while the server process stays the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _support.wait import wait_until
from db_servers import Server, mariadb_server, postgres_server
from writers_pki import Pki

from spiffe_bridge.devagent.ca import TrustDomainCA
from spiffe_bridge.fileset import FileSetWriter
from spiffe_bridge.formats import X509Options, render_x509
from spiffe_bridge.updaters import UpdateError, UpdatePolicy, mysql, postgres

pytestmark = [pytest.mark.consumers, pytest.mark.timeout(600)]
DEADLINE = 30.0


def _writer(server_certs: Path, uid: int, gid: int) -> FileSetWriter:
    return FileSetWriter(server_certs, uid=uid, gid=gid)


def _wait_serial(server: Server, starttls: str, serial: int) -> None:
    wait_until(
        lambda: server.served_serial(starttls) == serial,
        f"the server to serve serial {serial}",
        DEADLINE,
        interval=0.05,
        detail=lambda: f"it still serves {server.served_serial(starttls)}",
    )


@pytest.fixture(scope="module")
def db_pki() -> Pki:
    return Pki(TrustDomainCA("example.org", intermediate=True))


def _initial(pki: Pki) -> Callable[[Path, int, int], None]:
    def write(certs: Path, uid: int, gid: int) -> None:
        _writer(certs, uid, gid).write(render_x509("pem", pki.context(), X509Options()))

    return write


@pytest.fixture(scope="module")
def pg(db_pki: Pki) -> Iterator[Server]:
    with postgres_server(_initial(db_pki)) as server:
        yield server


@pytest.fixture(scope="module")
def maria(db_pki: Pki) -> Iterator[Server]:
    with mariadb_server(_initial(db_pki)) as server:
        yield server


def _rotate(server: Server, pki: Pki) -> int:
    _writer(server.certs, server.uid, server.gid).write(render_x509("pem", pki.context(), X509Options()))
    key = server.certs / "svid_key.pem"
    assert key.stat().st_mode & 0o777 == 0o600 and key.stat().st_uid == server.uid
    return pki.issued[-1].serial_number


def test_postgres_takes_the_new_certificate_on_pg_reload_conf(pg: Server, db_pki: Pki) -> None:
    first = db_pki.issued[-1].serial_number
    assert pg.served_serial("postgres") == first
    pid = pg.proc.pid
    for _ in range(2):
        serial = _rotate(pg, db_pki)
        assert pg.served_serial("postgres") != serial  # files alone change nothing: no reload yet
        asyncio.run(postgres.apply(f"host={pg.socket_dir} port={pg.port} user=postgres dbname=postgres"))
        _wait_serial(pg, "postgres", serial)
    assert pg.proc.poll() is None and pg.proc.pid == pid


def test_postgres_errors_are_typed_and_hide_the_password(pg: Server) -> None:
    conninfo = f"host=127.0.0.1 port={pg.port} user=nobody password=s3cret dbname=postgres sslmode=disable"
    with pytest.raises(UpdateError) as info:
        asyncio.run(postgres.apply(conninfo, policy=UpdatePolicy(timeout=5, attempts=2)))
    assert info.value.action == "reload_postgres" and info.value.attempts == 2
    assert "s3cret" not in str(info.value) and "password=***" in str(info.value)
    assert postgres.describe("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_mariadb_takes_the_new_certificate_on_flush_ssl(maria: Server, db_pki: Pki) -> None:
    dsn = f"mysql://root@localhost/?unix_socket={maria.socket_dir}/mysqld.sock"
    pid = maria.proc.pid
    serial = _rotate(maria, db_pki)
    assert maria.served_serial("mysql") != serial
    assert asyncio.run(mysql.apply(dsn)) == "FLUSH SSL"
    _wait_serial(maria, "mysql", serial)
    assert maria.proc.poll() is None and maria.proc.pid == pid


def test_mysql_statement_follows_the_server_version() -> None:
    assert mysql.reload_statement("10.11.19-MariaDB-0+deb12u1") == "FLUSH SSL"
    assert mysql.reload_statement("8.0.36") == "ALTER INSTANCE RELOAD TLS"
    assert mysql.reload_statement("8.4.0-commercial") == "ALTER INSTANCE RELOAD TLS"
    for old in ("10.3.39-MariaDB", "8.0.15", "5.7.44-log"):
        with pytest.raises(UpdateError) as info:
            mysql.reload_statement(old)
        assert not info.value.retryable


def test_mysql_dsn(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    dsn = mysql.Dsn.parse(f"mysql://admin@db.local:3307/?password_file={secret}")
    assert (dsn.user, dsn.password, dsn.host, dsn.port) == ("admin", "from-file", "db.local", 3307)
    assert "from-file" not in repr(dsn) and str(dsn) == "mysql://admin@db.local:3307"
    with pytest.raises(ValueError, match="unknown DSN parameter"):
        mysql.Dsn.parse("mysql://a@h/?sslmode=x")
    with pytest.raises(ValueError, match="mysql://user"):
        mysql.Dsn.parse("postgres://a@h/")


def test_mariadb_access_denied_is_not_retried(maria: Server) -> None:
    dsn = f"mysql://nobody:wrong@127.0.0.1:{maria.port}/"
    with pytest.raises(UpdateError) as info:
        asyncio.run(mysql.apply(dsn, policy=UpdatePolicy(timeout=5, attempts=3)))
    assert not info.value.retryable and info.value.attempts == 1 and "wrong" not in str(info.value)


def test_postgres_without_the_right_is_not_retried(pg: Server) -> None:
    import psycopg

    admin = f"host={pg.socket_dir} port={pg.port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS probe")
        conn.execute("CREATE ROLE probe LOGIN")
    conninfo = f"host={pg.socket_dir} port={pg.port} user=probe dbname=postgres"
    with pytest.raises(UpdateError) as info:
        asyncio.run(postgres.apply(conninfo, policy=UpdatePolicy(timeout=5, attempts=3)))
    assert not info.value.retryable and info.value.attempts == 1
    assert "permission denied" in info.value.reason
