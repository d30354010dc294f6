"""reload_haproxy against the real HAProxy: runtime API updates under load, no reload, no failed request.

HAProxy runs in the foreground (``-db``) on a free loopback port with its admin socket
in the test's temp directory. Load threads open a fresh mTLS connection per request
and record every failure and every served serial; each rotation waits until the load
has seen the new certificate, with a deadline.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _support.ci import require_binary
from _support.wait import wait_until
from cryptography import x509
from writers_pki import Pki, client_context, free_port, https_get, wait_for_port

from spiffe_bridge.devagent.ca import TrustDomainCA
from spiffe_bridge.fileset import FileSetWriter
from spiffe_bridge.formats import X509Options, render_x509
from spiffe_bridge.sidecar.hot_updater import HotUpdater
from spiffe_bridge.sidecar.hot_updates import HotUpdate
from spiffe_bridge.updaters import UpdateError, UpdatePolicy, haproxy

pytestmark = [pytest.mark.consumers, pytest.mark.timeout(300)]

CFG = """
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
DEADLINE = 30.0


@dataclass
class HAProxy:
    proc: subprocess.Popen[bytes]
    port: int
    admin: Path
    certs: Path
    writer: FileSetWriter

    @property
    def address(self) -> str:
        return f"unix://{self.admin}"

    def rotate(self, pki: Pki, with_ca: bool = False) -> int:
        """Write a new combined file and push it (and the CA file) over the runtime API; the new serial."""
        self.writer.write(render_x509("combined", pki.context(), X509Options()))
        crt, ca = self.certs / "svid_combined.pem", self.certs / "svid_bundle.pem"
        ca_args = {"ca_path": str(ca), "ca_pem": ca.read_bytes()} if with_ca else {}
        asyncio.run(haproxy.apply(self.address, str(crt), crt.read_bytes(), **ca_args))  # type: ignore[arg-type]
        return pki.issued[-1].serial_number


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[HAProxy, Pki]]:
    binary = require_binary("haproxy")
    pki = Pki(TrustDomainCA("example.org", intermediate=True))
    certs, port, admin = tmp_path / "certs", free_port(), tmp_path / "admin.sock"
    writer = FileSetWriter(certs)
    writer.write(render_x509("combined", pki.context(), X509Options()))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(CFG.format(admin=admin, port=port, certs=certs))
    proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        yield HAProxy(proc, port, admin, certs, writer), pki
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


@dataclass
class Load:
    """Client threads, each doing one full mTLS request per connection until stopped."""

    port: int
    context: ssl.SSLContext
    threads: int = 4
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    serials: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response, leaf = https_get(self.port, self.context)
                ok = response.startswith(b"HTTP/1.1 200") and response.endswith(b"ok")
                serial = x509.load_der_x509_certificate(leaf).serial_number
            except (OSError, ssl.SSLError) as exc:
                ok, serial, response = False, 0, repr(exc).encode()
            with self._lock:
                self.requests += 1
                if ok:
                    self.serials.add(serial)
                else:
                    self.failures.append(response[:200].decode(errors="replace"))

    def __enter__(self) -> Load:
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(20)

    def wait_for_serial(self, serial: int) -> None:
        wait_until(
            lambda: serial in self.serials, f"the load to see serial {serial}", DEADLINE, interval=0.01
        )


def test_rotations_under_load_fail_no_request_and_keep_the_pid(
    server: tuple[HAProxy, Pki], tmp_path: Path
) -> None:
    ha, pki = server
    cert, key = pki.client_files(tmp_path / "client")
    context = client_context(ha.certs / "svid_bundle.pem", cert, key)
    pid = ha.proc.pid
    with Load(ha.port, context) as load:
        load.wait_for_serial(pki.issued[-1].serial_number)
        for _ in range(5):
            load.wait_for_serial(ha.rotate(pki))
        before = load.requests
        deadline = time.monotonic() + DEADLINE
        while load.requests < before + 20 and time.monotonic() < deadline:
            time.sleep(0.01)  # some more traffic after the last commit
    assert load.failures == [], load.failures[:5]
    assert load.requests >= 40 and len(load.serials) >= 6
    assert ha.proc.poll() is None and ha.proc.pid == pid
    info = asyncio.run(haproxy.command(haproxy.Address.parse(ha.address), "show info"))
    assert f"Pid: {pid}" in info


def test_ca_file_follows_a_root_rotation(server: tuple[HAProxy, Pki], tmp_path: Path) -> None:
    ha, pki = server
    pki.ca.rotate_x509_authority(keep_previous=True)
    new_cert, new_key = pki.client_files(tmp_path / "new-client")  # issued by the new root only
    bundle = ha.certs / "svid_bundle.pem"
    with pytest.raises((ssl.SSLError, ConnectionError)):  # HAProxy's CA file knows only the old root
        https_get(ha.port, client_context(bundle, new_cert, new_key))
    version = ha.rotate(pki, with_ca=True)
    context = client_context(bundle, new_cert, new_key)  # the bundle file now has both roots
    response, leaf = https_get(ha.port, context)
    assert response.endswith(b"ok") and x509.load_der_x509_certificate(leaf).serial_number == version


def test_errors_are_typed_and_bounded(server: tuple[HAProxy, Pki], tmp_path: Path) -> None:
    ha, pki = server
    served = pki.issued[-1].serial_number
    crt = ha.certs / "svid_combined.pem"
    with pytest.raises(UpdateError) as info:  # a name HAProxy's config does not use: no retry helps
        asyncio.run(haproxy.apply(ha.address, str(tmp_path / "other.pem"), crt.read_bytes()))
    assert not info.value.retryable and info.value.attempts == 1 and "PRIVATE" not in str(info.value)
    with pytest.raises(UpdateError) as bad:  # garbage is refused, and the served certificate stays
        asyncio.run(haproxy.apply(ha.address, str(crt), b"-----BEGIN CERTIFICATE-----\nAAAA\n"))
    assert bad.value.action == "reload_haproxy"
    cert, key = pki.client_files(tmp_path / "client")
    _, leaf = https_get(ha.port, client_context(ha.certs / "svid_bundle.pem", cert, key))
    assert x509.load_der_x509_certificate(leaf).serial_number == served

    policy = UpdatePolicy(timeout=1, attempts=3)
    started = time.monotonic()
    with pytest.raises(UpdateError) as gone:
        asyncio.run(haproxy.apply(f"unix://{tmp_path}/missing.sock", str(crt), b"x", policy=policy))
    assert gone.value.retryable and gone.value.attempts == 3 and time.monotonic() - started < 10
    with pytest.raises(ValueError, match="unix:///path"):
        haproxy.Address.parse("http://x")
    assert str(haproxy.Address.parse("tcp://127.0.0.1:9999")) == "tcp://127.0.0.1:9999"


def test_a_refused_update_waits_for_new_files_and_a_failed_one_is_retried(
    server: tuple[HAProxy, Pki], tmp_path: Path
) -> None:
    """A path HAProxy's config does not use cannot start working: it used to be retried every 30-300 s."""
    ha, _ = server
    files = render_x509("combined", server[1].context(), X509Options())
    policy = UpdatePolicy(timeout=2, attempts=1)

    def update(target: str, cert_path: str) -> HotUpdate:
        return HotUpdate("reload_haproxy", target, str(ha.certs), policy, "svid_combined.pem", "", cert_path)

    refused = update(ha.address, str(tmp_path / "other.pem"))
    unreachable = update(f"unix://{tmp_path}/missing.sock", str(ha.certs / "svid_combined.pem"))
    outcomes: list[tuple[str, str | None]] = []
    updater = HotUpdater([refused, unreachable], lambda _a, label, error: outcomes.append((label, error)))
    try:
        updater.after_write(str(ha.certs), files)
        assert updater.wait_idle(DEADLINE)
        assert sorted(label for label, error in outcomes if error) == sorted(
            [refused.label, unreachable.label]
        )
        assert not updater.retry_pending(refused)
        assert updater.retry_pending(unreachable)
    finally:
        updater.stop()
