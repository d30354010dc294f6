"""Helpers for the interop tests against a real SPIRE agent, spiffe-helper and our sidecar/relay.

Also a small pytest plugin: test modules load it with ``pytest_plugins = ("interop_support",)``,
which adds

* the ``spire_upstream`` fixture (session): a second SPIRE deployment whose server CA is an
  intermediate under an ``UpstreamAuthority "disk"`` root, so X.509-SVID chains are
  leaf + intermediate (the shared deployment signs leaves with its root directly);
* a terminal summary line with the interop suite's wall time and its slowest tests.

Nothing here sleeps to synchronise: ``wait_for`` polls a condition until a deadline
and fails with what it was waiting for.

PYTEST_DONT_REWRITE: test modules import this before pytest loads it as a plugin, so it
is not assertion-rewritten (its asserts carry their own messages).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from _support.wait import wait_until
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from spire import SpireDeployment, free_port
from spire_ca import FederatedCA

HERE = Path(__file__).resolve().parent
#: Default deadline of a wait that is not tied to the SVID TTL.
DEADLINE = 20.0


# --------------------------------------------------------------------------
# waiting


def wait_for(
    condition: Callable[[], Any], what: str, timeout: float = DEADLINE, interval: float = 0.05
) -> Any:
    """``_support.wait.wait_until`` with interop's deadline; a file mid-replace is "not yet", so is a
    socket that is not up.
    """
    return wait_until(condition, what, timeout, interval=interval, ignore=(OSError, ValueError, KeyError))


def short_socket_dir(prefix: str = "sbi-") -> Path:
    """A fresh directory with a short path for Unix sockets (108-byte limit)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def snapshot(directory: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``directory``: (inode, mtime_ns, link target or bytes)."""
    out: dict[str, tuple[Any, ...]] = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(root) / name
            st = path.lstat()
            if path.is_symlink():
                content: Any = os.readlink(path)
            elif path.is_dir():
                content = "<dir>"
            else:
                content = path.read_bytes()
            out[str(path.relative_to(directory))] = (st.st_ino, st.st_mtime_ns, content)
    return out


class StatusLog:
    """Status listener for ``SourceState.add_status_listener``: records changes, waits for one."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, status: Any, _exc: Exception | None) -> None:
        with self._cond:
            self.seen.append(status)
            self._cond.notify_all()

    def wait(self, status: Any, after: int = 0, timeout: float = 20.0) -> int:
        with self._cond:
            ok = self._cond.wait_for(lambda: status in self.seen[after:], timeout)
            assert ok, f"status {status.value} not reached within {timeout}s; saw {self.seen}"
            return self.seen.index(status, after)


# --------------------------------------------------------------------------
# X.509 material


def pem_certs(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data)


def split_der(blob: bytes) -> list[bytes]:
    """Split concatenated DER certificates (the Workload API encoding) without our library."""
    out, i = [], 0
    while i < len(blob):
        assert blob[i] == 0x30, f"not a DER SEQUENCE at offset {i}"
        first = blob[i + 1]
        if first < 0x80:
            header, length = 2, first
        else:
            n = first & 0x7F
            header, length = 2 + n, int.from_bytes(blob[i + 2 : i + 2 + n], "big")
        out.append(blob[i : i + header + length])
        i += header + length
    return out


def agent_serials(spire: SpireDeployment) -> dict[str, int]:
    """Leaf serial per SPIFFE ID, as ``spire-agent api fetch x509`` (SPIRE's own client) sees them."""
    return {
        s["spiffe_id"]: x509.load_der_x509_certificate(
            split_der(base64.b64decode(s["x509_svid"]))[0]
        ).serial_number
        for s in spire.fetch_x509()["svids"]
    }


def der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def spiffe_id_of(cert: x509.Certificate) -> str:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    (uri,) = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uri


def public_der(key: Any) -> bytes:
    return bytes(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def key_matches(private_key: Any, cert: x509.Certificate) -> bool:
    return public_der(private_key.public_key()) == public_der(cert.public_key())


def openssl_verify(chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], work: Path) -> None:
    """``openssl verify`` the leaf (chain[0]) via chain[1:] against ``roots``; AssertionError if not OK.

    OpenSSL knows nothing of SPIFFE; this checks the signatures, validity and CA flags
    the way every TLS consumer of the written files will.
    """
    work.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    leaf = work / "leaf.pem"
    leaf.write_bytes(chain[0].public_bytes(pem))
    cafile = work / "roots.pem"
    cafile.write_bytes(b"".join(c.public_bytes(pem) for c in roots))
    argv = ["openssl", "verify", "-CAfile", str(cafile)]
    if len(chain) > 1:
        untrusted = work / "untrusted.pem"
        untrusted.write_bytes(b"".join(c.public_bytes(pem) for c in chain[1:]))
        argv += ["-untrusted", str(untrusted)]
    done = subprocess.run([*argv, str(leaf)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip().endswith(": OK"), done.stdout + done.stderr


def openssl_key_matches(cert_pem: Path, key_pem: Path) -> bool:
    """Whether OpenSSL derives the same public key from the certificate and the key file."""

    def run(*argv: str) -> bytes:
        return subprocess.run(["openssl", *argv], capture_output=True, check=True, timeout=30).stdout

    from_cert = run("x509", "-in", str(cert_pem), "-noout", "-pubkey")
    from_key = run("pkey", "-in", str(key_pem), "-pubout")
    return from_cert == from_key


# --------------------------------------------------------------------------
# JWT


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jose_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a compact JWS, unverified."""
    head, body, _sig = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(head))), json.loads(base64.urlsafe_b64decode(pad(body)))


def mint_jwt(
    ca: FederatedCA, subject: str, audience: Sequence[str], ttl: int = 300, kid: str | None = None
) -> str:
    """An ES256 JWT-SVID signed with the foreign trust domain's JWT key (as its own issuer would)."""
    now = int(time.time())
    header = {"alg": "ES256", "kid": kid or ca.jwt_kid, "typ": "JWT"}
    claims = {"sub": subject, "aud": list(audience), "exp": now + ttl, "iat": now}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    der = ca.jwt_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


# --------------------------------------------------------------------------
# processes: our sidecar and spiffe-helper


def _clean_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}
    env.update(extra or {})
    return env


class SidecarProcess:
    """``python -m spiffe_bridge run ARGS`` in ``cwd``; output goes to a log file."""

    def __init__(self, args: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.cwd = cwd
        self.log_path = cwd / f"sidecar-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "spiffe_bridge", "run", *args],
                cwd=cwd,
                env=_clean_env(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"sidecar did not exit within {timeout}s; log:\n{self.log}") from None

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def alive(self) -> bool:
        """True while running; AssertionError with the log if it exited."""
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"sidecar exited with {code}; log:\n{self.log}")
        return True


@contextlib.contextmanager
def sidecar(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> Iterator[SidecarProcess]:
    proc = SidecarProcess(args, cwd, env)
    try:
        yield proc
    finally:
        proc.close()


def helper_process(binary: Path, conf: Path, cwd: Path, *args: str) -> subprocess.Popen[str]:
    """Start spiffe-helper ``-config conf ARGS`` in ``cwd`` (collect its output with communicate())."""
    return subprocess.Popen(
        [str(binary), "-config", str(conf), *args],
        cwd=cwd,
        env=_clean_env(None),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


# --------------------------------------------------------------------------
# HTTP health of the sidecar


def http_get(url: str) -> tuple[int, bytes]:
    """(status, body); (0, b"") while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


class Health:
    """The sidecar's health endpoints on 127.0.0.1:<port>."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()

    @property
    def hcl(self) -> str:
        return (
            f"health_checks {{\n  listener_enabled = true\n  bind_port = {self.port}\n}}\n"
            'health_bind_address = "127.0.0.1"\n'
        )

    def get(self, path: str = "/ready") -> tuple[int, dict[str, Any]]:
        code, body = http_get(f"http://127.0.0.1:{self.port}{path}")
        return code, (json.loads(body) if body else {})

    def ready(self) -> bool:
        return self.get("/ready")[0] == 200

    def body(self) -> dict[str, Any]:
        return dict(self.get("/ready")[1].get("health", {}))


# --------------------------------------------------------------------------
# a SPIRE deployment with an upstream CA (X.509-SVID chains carry an intermediate)


def add_upstream_authority(d: SpireDeployment) -> FederatedCA:
    """Before ``d.start()``: make the server's CA an intermediate of a disk-held upstream root.

    The root is made like the federated CA (self-signed, P-256) and lives in the test
    process; its certificate becomes the trust domain's bundle.
    """
    upstream = FederatedCA(d.trust_domain)
    paths = upstream.write(d.base_dir)
    use_disk_upstream(d, paths["cert"], paths["key"])
    return upstream


def use_disk_upstream(d: SpireDeployment, cert_path: Path, key_path: Path) -> None:
    """Before ``d.start()``: configure ``UpstreamAuthority "disk"`` with a self-signed root's files.

    SPIRE re-reads both files each time it mints a CA, so replacing them and then preparing
    a new local authority rotates the trust domain to a new root.
    """
    original = d.server.write_config
    block = (
        'plugins {\n    UpstreamAuthority "disk" {\n        plugin_data {\n'
        f"            key_file_path = {json.dumps(str(key_path))}\n"
        f"            cert_file_path = {json.dumps(str(cert_path))}\n"
        "        }\n    }\n"
    )

    def write_config() -> None:
        original()
        text = d.server.config_path.read_text()
        assert text.count("plugins {") == 1
        d.server.config_path.write_text(text.replace("plugins {\n", block, 1))

    d.server.write_config = write_config  # type: ignore[method-assign]


_EXTRA_TIMINGS: list[tuple[str, dict[str, float]]] = []


@pytest.fixture(scope="session")
def spire_upstream(
    spire_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SpireDeployment]:
    """A started deployment (trust domain upstream.test, federated.test, the default entries)
    whose SVIDs chain leaf -> SPIRE server CA (intermediate) -> upstream root (the bundle)."""
    started = time.monotonic()
    d = SpireDeployment(
        spire_bin_dir, tmp_path_factory.mktemp("spire-upstream"), trust_domain="upstream.test"
    )
    d.upstream_ca = add_upstream_authority(d)  # type: ignore[attr-defined]
    try:
        d.start()
        yield d
    finally:
        t0 = time.monotonic()
        d.stop()
        timings = dict(d.timings)
        timings["teardown_s"] = time.monotonic() - t0
        timings["lifetime_s"] = time.monotonic() - started
        _EXTRA_TIMINGS.append(("spire_upstream", timings))


# --------------------------------------------------------------------------
# wall time summary

_RUNS: dict[str, list[float]] = {}  # nodeid -> [start, stop, duration sum]
_SKIPPED: set[str] = set()  # listed apart: a skipped test did not run


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.nodeid.startswith("tests/interop/"):
        return
    if report.skipped:
        _SKIPPED.add(report.nodeid)
    start, stop = getattr(report, "start", None), getattr(report, "stop", None)
    run = _RUNS.setdefault(report.nodeid, [float("inf"), 0.0, 0.0])
    if start is not None and stop is not None:
        run[0], run[1] = min(run[0], start), max(run[1], stop)
    run[2] += report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    ran = {k: v for k, v in _RUNS.items() if k not in _SKIPPED}
    if _SKIPPED:
        terminalreporter.section("interop tests skipped (they did not run)")
        for nodeid in sorted(_SKIPPED):
            terminalreporter.write_line(f"  {nodeid.removeprefix('tests/interop/')}")
    if not ran:
        return
    terminalreporter.section("interop suite wall time")
    for name, t in _EXTRA_TIMINGS:
        parts = ", ".join(f"{k} {v:.2f}s" for k, v in t.items())
        terminalreporter.write_line(f"{name}: {parts}")
    first = min(r[0] for r in ran.values())
    last = max(r[1] for r in ran.values())
    busy = sum(r[2] for r in ran.values())
    slowest = sorted(ran.items(), key=lambda kv: kv[1][2], reverse=True)[:5]
    terminalreporter.write_line(
        f"tests/interop: {len(ran)} tests ran in {last - first:.1f}s wall time "
        f"({busy:.1f}s in setup+call+teardown)"
    )
    for nodeid, (_s, _e, total) in slowest:
        terminalreporter.write_line(f"  {total:6.1f}s  {nodeid.removeprefix('tests/interop/')}")
