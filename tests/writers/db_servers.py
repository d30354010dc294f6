"""Real PostgreSQL and MariaDB servers for the reload tests, on loopback, as an unprivileged user.

Each server gets a fresh data directory under a private temp directory owned by
the server's system user (``postgres`` / ``mysql``, created by the Debian
packages); as root the server runs under ``runuser``. TLS files are written by the
production FileSetWriter owned by that user. Readiness is "the port accepts", in
a loop with a deadline. Missing servers skip (``CI=true``: fail) -- install them
with scripts/install-system-deps.sh.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _support.ci import missing
from cryptography import x509
from writers_pki import free_port, openssl, wait_for_port

#: Writes a server's initial TLS files into ``certs``, owned by the given uid and gid.
WriteCerts = Callable[[Path, int, int], None]


def _account(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        missing(f"no {name!r} user: run scripts/install-system-deps.sh")
        raise


def _ids(owner: pwd.struct_passwd) -> tuple[int, int]:
    """Who owns the server's files: its system user as root, else ourselves (we run it then)."""
    return (owner.pw_uid, owner.pw_gid) if os.geteuid() == 0 else (os.getuid(), os.getgid())


def _as(user: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run as ``user`` when we are root (servers refuse to run as root)."""
    return ["runuser", "-u", user, "--", *argv] if os.geteuid() == 0 else list(argv)


@contextmanager
def _private_dir(prefix: str, owner: pwd.struct_passwd) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        if os.geteuid() == 0:
            os.chown(base, owner.pw_uid, owner.pw_gid)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Server:
    """A running server: its TCP port, unix socket directory, cert directory and owner."""

    proc: subprocess.Popen[bytes]
    port: int
    socket_dir: Path
    certs: Path
    uid: int
    gid: int

    def served_serial(self, starttls: str) -> int:
        """The serial of the certificate a new TLS connection gets (openssl s_client -starttls)."""
        done = openssl("s_client", "-starttls", starttls, "-connect", f"127.0.0.1:{self.port}", check=False)
        found = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", done.stdout, re.S)
        assert found, done.stdout + done.stderr
        return x509.load_pem_x509_certificate(found.group(0).encode()).serial_number


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        missing("PostgreSQL not installed: run scripts/install-system-deps.sh")
    return Path(found[-1]).parent


@contextmanager
def postgres_server(write_certs: WriteCerts) -> Iterator[Server]:
    """PostgreSQL with ssl=on reading svid.pem / svid_key.pem / svid_bundle.pem from its cert dir."""
    bindir = _postgres_bin()
    owner = _account("postgres")
    with _private_dir("spiffe-bridge-pg-", owner) as base:
        data, sock, certs, port = base / "data", base / "sock", base / "certs", free_port()
        sock.mkdir()
        if os.geteuid() == 0:
            os.chown(sock, owner.pw_uid, owner.pw_gid)
        uid, gid = _ids(owner)
        write_certs(certs, uid, gid)
        init = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"]
        subprocess.run(_as("postgres", init), check=True, capture_output=True, timeout=120)
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": str(sock),
            "ssl": "on",
            "ssl_cert_file": str(certs / "svid.pem"),
            "ssl_key_file": str(certs / "svid_key.pem"),
            "ssl_ca_file": str(certs / "svid_bundle.pem"),
            "fsync": "off",
        }
        argv = [str(bindir / "postgres"), "-D", str(data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        proc = subprocess.Popen(_as("postgres", argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc, timeout=60)
            yield Server(proc, port, sock, certs, uid, gid)
        finally:
            _stop(proc)


def _mariadb_tcp_account(sock: Path) -> None:
    """An account for 127.0.0.1, so TCP clients get the handshake (not "host not allowed")."""
    import pymysql

    with pymysql.connect(unix_socket=str(sock), user="root") as conn, conn.cursor() as cursor:
        cursor.execute("CREATE USER 'probe'@'127.0.0.1' IDENTIFIED BY 'probe'")


@contextmanager
def mariadb_server(write_certs: WriteCerts) -> Iterator[Server]:
    """MariaDB with TLS from its cert dir; root@localhost logs in over the unix socket."""
    server = shutil.which("mariadbd", path="/usr/sbin:/usr/bin") or shutil.which("mysqld", path="/usr/sbin")
    installer = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    if not server or not installer:
        missing("MariaDB not installed: run scripts/install-system-deps.sh")
    assert server and installer
    owner = _account("mysql")
    with _private_dir("spiffe-bridge-mariadb-", owner) as base:
        data, certs, port = base / "data", base / "certs", free_port()
        uid, gid = _ids(owner)
        write_certs(certs, uid, gid)
        common = ["--no-defaults", f"--datadir={data}", "--user=mysql"]
        init = [installer, *common, "--auth-root-authentication-method=socket", "--skip-test-db"]
        subprocess.run(init, check=True, capture_output=True, timeout=300)
        argv = [
            server,
            *common,
            f"--socket={base}/mysqld.sock",
            f"--pid-file={base}/mysqld.pid",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=16M",
            f"--ssl-cert={certs}/svid.pem",
            f"--ssl-key={certs}/svid_key.pem",
            f"--ssl-ca={certs}/svid_bundle.pem",
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc, timeout=120)
            _mariadb_tcp_account(base / "mysqld.sock")
            yield Server(proc, port, base, certs, uid, gid)
        finally:
            _stop(proc)
