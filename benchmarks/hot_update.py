"""8. HAProxy hot update: runtime API (reload_haproxy) versus a SIGUSR2 reload, under load.

One HAProxy per method serves mTLS on loopback with two client threads making one
full request per connection. Per rotation the new combined file is written, then
either ``updaters.haproxy.apply`` runs (set + commit over the admin socket) or the
master-worker HAProxy (``-W``) gets SIGUSR2. Measured: the time from the start of
the update to the first request that gets the new certificate, the update call
itself, failed requests and how many worker PIDs came and went.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from benchmarks._harness import workdir
from benchmarks._report import Result, goal, new_result
from benchmarks._stats import fmt_seconds, summary

NAME = "haproxy"
CFG = """
global
    stats socket {admin} mode 600 level admin expose-fd listeners
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{port} ssl crt {certs}/svid_combined.pem ca-file {certs}/svid_bundle.pem verify required
    http-request return status 200 content-type text/plain string "ok"
"""


class _Pki:
    """SVIDs of one dev CA written as HAProxy's combined file, and a client certificate."""

    def __init__(self, base: Path) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding

        from spiffe_bridge._encoding import pem_block
        from spiffe_bridge.devagent.ca import TrustDomainCA
        from spiffe_bridge.fileset import FileSetWriter

        self.ca = TrustDomainCA("example.org")
        self.certs = base / "certs"
        self.writer = FileSetWriter(self.certs)
        client = self.ca.issue_x509_svid("spiffe://example.org/client", ttl=3600)
        chain = b"".join(pem_block("CERTIFICATE", c.public_bytes(Encoding.DER)) for c in client.chain)
        (base / "client.pem").write_bytes(chain)
        (base / "client_key.pem").write_bytes(pem_block("PRIVATE KEY", client.key_der()))
        self.client = (base / "client.pem", base / "client_key.pem")

    def write(self) -> int:
        from spiffe_bridge._proto import workload_pb2 as pb
        from spiffe_bridge.client import decode_x509_context
        from spiffe_bridge.formats import X509Options, render_x509

        mat = self.ca.issue_x509_svid("spiffe://example.org/server", ttl=3600, dns_names=("localhost",))
        svid = pb.X509SVID(
            spiffe_id="spiffe://example.org/server",
            x509_svid=mat.chain_der(),
            x509_svid_key=mat.key_der(),
            bundle=self.ca.bundle_der(),
        )
        ctx = decode_x509_context(pb.X509SVIDResponse(svids=[svid]))
        self.writer.write(render_x509("combined", ctx, X509Options()))
        return int(mat.serial_number)


class _Load:
    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.port, self.context = port, context
        self.failures = self.requests = 0
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _one(self) -> int:
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw,
            self.context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            serial = x509.load_der_x509_certificate(tls.getpeercert(True) or b"").serial_number
            tls.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            body = b""
            while chunk := tls.recv(4096):
                body += chunk
        if not body.endswith(b"ok"):
            raise ConnectionError("bad answer")
        return int(serial)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                serial = self._one()
            except (OSError, ssl.SSLError, ValueError):
                self.failures += 1
            else:
                self.seen.setdefault(serial, time.monotonic())
            self.requests += 1

    def __enter__(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def wait(self, serial: int, what: str, timeout: float = 20.0) -> float:
        deadline = time.monotonic() + timeout
        while serial not in self.seen:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: the new certificate was never served")
            time.sleep(0.001)
        return self.seen[serial]


def _workers(master: int) -> set[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return set()
    return {int(p) for p in out.split()}


def _wait_master(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Until the master CLI lists its worker: the master then handles SIGUSR2 as a reload."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(path))
                s.sendall(b"show proc\n")
                answer = b""
                while b"# programs" not in answer and (chunk := s.recv(4096)):
                    answer += chunk
            if b" worker " in answer:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError("HAProxy's master did not come up")


def _method(binary: str, method: str, rotations: int) -> dict[str, Any]:
    from spiffe_bridge.updaters import haproxy

    with workdir("sb-bench-ha-") as tmp:
        base = Path(tmp)
        pki = _Pki(base)
        pki.write()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        admin = base / "admin.sock"
        cfg = base / "haproxy.cfg"
        cfg.write_text(CFG.format(admin=admin, port=port, certs=pki.certs))
        master = base / "master.sock"
        argv = [binary, "-db", "-f", str(cfg)] + (["-W", "-S", str(master)] if method == "sigusr2" else [])
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("HAProxy did not start") from None
                    time.sleep(0.02)
            if method == "sigusr2":
                _wait_master(master, proc)  # a SIGUSR2 before the master is up would be lost
            context = ssl.create_default_context(cafile=str(pki.certs / "svid_bundle.pem"))
            context.load_cert_chain(*map(str, pki.client))
            visible, calls, pids = [], [], set(_workers(proc.pid)) | {proc.pid}
            with _Load(port, context) as load:
                for _ in range(rotations):
                    serial = pki.write()
                    crt = pki.certs / "svid_combined.pem"
                    started = time.monotonic()
                    if method == "runtime-api":
                        asyncio.run(haproxy.apply(f"unix://{admin}", str(crt), crt.read_bytes()))
                    else:
                        os.kill(proc.pid, signal.SIGUSR2)
                    calls.append(time.monotonic() - started)
                    visible.append(load.wait(serial, method) - started)
                    pids |= _workers(proc.pid)
                    time.sleep(0.2)
            return {
                "visible": summary(visible),
                "call": summary(calls),
                "failures": load.failures,
                "requests": load.requests,
                "pids": len(pids),
            }
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def run(quick: bool) -> Result:
    """``quick``: 2 rotations per method; full: 20."""
    result = new_result(
        "HAProxy: runtime API vs SIGUSR2 reload (2 client threads)",
        ["method", "update → new cert served (p50 / p99)", "update call (p50)", "failed / requests", "PIDs"],
    )
    binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if binary is None:
        result["notes"].append("haproxy not installed: run scripts/install-system-deps.sh")
        return result
    rotations = 2 if quick else 20
    for method in ("runtime-api", "sigusr2"):
        r = _method(binary, method, rotations)
        result["results"][method] = r
        result["table"]["rows"].append(
            [
                method,
                f"{fmt_seconds(r['visible']['p50'])} / {fmt_seconds(r['visible']['p99'])}",
                fmt_seconds(r["call"]["p50"]),
                f"{r['failures']} / {r['requests']}",
                str(r["pids"]),
            ]
        )
    api = result["results"]["runtime-api"]
    failed = api["failures"]
    goal(result, "runtime API: zero failed requests across rotations", f"{failed} failed", failed == 0)
    result["notes"].append(
        "SIGUSR2 starts a new worker per reload (PIDs column); the runtime API keeps the one process"
    )
    return result
