"""Real consumers load the written files: nginx and HAProxy complete mTLS with a client SVID.

Each test starts its own server on a free loopback port with a config in a temp
directory, as the current user (root here and in CI: nginx is told ``user root``
so it does not switch to ``nobody``). Readiness is "the port accepts", checked in a
loop with a deadline; rotation is observed by the served certificate changing.
Missing binaries skip (``CI=true``: fail) -- install them with
scripts/install-system-deps.sh.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _support.ci import require_binary
from _support.wait import wait_until
from cryptography import x509
from writers_pki import Pki, client_context, free_port, https_get, wait_for_port

from spiffe_bridge.fileset import FileSetWriter
from spiffe_bridge.formats import X509Options, render_x509

pytestmark = pytest.mark.consumers


def _served_serial(port: int, cafile: Path, cert: Path, key: Path) -> int:
    _, leaf = https_get(port, client_context(cafile, cert, key))
    return x509.load_der_x509_certificate(leaf).serial_number


def _wait_for_serial(
    port: int, cafile: Path, cert: Path, key: Path, serial: int, timeout: float = 20
) -> None:
    wait_until(
        lambda: _served_serial(port, cafile, cert, key) == serial,
        "the server to pick up the rotated certificate",
        timeout,
        interval=0.05,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- nginx --------------------------------------------------------------------------------

NGINX_CONF = """
{user}
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {certs}/svid.pem;
        ssl_certificate_key {certs}/svid_key.pem;
        ssl_client_certificate {certs}/svid_bundle.pem;
        ssl_verify_client on;
        ssl_verify_depth 3;
        location / {{ return 200 "verify=$ssl_client_verify\\n"; }}
    }}
}}
"""


Nginx = tuple[int, Path, Callable[[], "subprocess.Popen[bytes]"]]


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    """nginx serving mTLS from ``<tmp>/certs`` (written by the test before it is started)."""
    binary = require_binary("nginx")
    prefix, certs, port = tmp_path / "nginx", tmp_path / "certs", free_port()
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True)
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, prefix=prefix, port=port, certs=certs))
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        globals_ = f"daemon off; master_process on; pid {prefix}/nginx.pid; error_log stderr;"
        proc = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(conf), "-e", "stderr", "-g", globals_],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        wait_for_port(port, proc)
        return proc

    try:
        yield port, certs, start
    finally:
        for proc in procs:
            _stop(proc)


def test_nginx_mtls_with_pem_files(nginx: Nginx, pki: Pki, tmp_path: Path) -> None:
    port, certs, start = nginx
    writer = FileSetWriter(certs)
    writer.write(render_x509("pem", pki.context(), X509Options()))
    served = pki.issued[-1].serial_number
    proc = start()
    cert, key = pki.client_files(tmp_path / "client")
    bundle = certs / "svid_bundle.pem"

    response, leaf = https_get(port, client_context(bundle, cert, key))
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"verify=SUCCESS\n")
    assert x509.load_der_x509_certificate(leaf).serial_number == served

    anonymous, _ = https_get(port, client_context(bundle))
    assert b"400" in anonymous.split(b"\r\n")[0]  # no client certificate: refused

    # rotation: rewrite the set, HUP the master (nginx's reload), new handshakes use the new SVID
    writer.write(render_x509("pem", pki.context(), X509Options()))
    proc.send_signal(signal.SIGHUP)
    _wait_for_serial(port, bundle, cert, key, pki.issued[-1].serial_number)


# -- HAProxy ------------------------------------------------------------------------------

HAPROXY_CFG = """
global
    stats socket {admin} mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{port} ssl crt {certs}/svid_combined.pem ca-file {certs}/svid_bundle.pem verify required
    http-request return status 200 content-type text/plain string "ok"
"""


def _admin(sock_path: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock_path))
        s.sendall(command.encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_haproxy_mtls_with_combined_file(pki: Pki, tmp_path: Path) -> None:
    binary = require_binary("haproxy")
    certs, port, admin = tmp_path / "certs", free_port(), tmp_path / "haproxy.sock"
    writer = FileSetWriter(certs)
    writer.write(render_x509("combined", pki.context(), X509Options()))
    served = pki.issued[-1].serial_number
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(admin=admin, port=port, certs=certs))
    proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        cert, key = pki.client_files(tmp_path / "client")
        bundle = certs / "svid_bundle.pem"
        response, leaf = https_get(port, client_context(bundle, cert, key))
        assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"ok")
        assert x509.load_der_x509_certificate(leaf).serial_number == served

        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_get(port, client_context(bundle))  # verify required: no client cert, no session

        # rotation through the runtime API (no reload): set + commit the new combined PEM
        writer.write(render_x509("combined", pki.context(), X509Options()))
        payload = (certs / "svid_combined.pem").read_text().strip()
        crt = f"{certs}/svid_combined.pem"
        assert "Transaction created" in _admin(admin, f"set ssl cert {crt} <<\n{payload}\n\n")
        assert "Success!" in _admin(admin, f"commit ssl cert {crt}\n")
        _wait_for_serial(port, bundle, cert, key, pki.issued[-1].serial_number)
    finally:
        _stop(proc)
