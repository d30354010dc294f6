"""The VM side of examples/linkerd-vm, run for real: SPIRE, relay, linkerd-env --watch, linkerd2-proxy.

* :class:`TrustAnchor` -- a Linkerd-style trust anchor (self-signed EC P-256 root, CN
  ``root.linkerd.cluster.local``, path length 1, as ``step certificate create --profile
  root-ca`` makes for ``linkerd install``); SPIRE's ``UpstreamAuthority "disk"`` holds it.
* :func:`unit_exec_start` -- the ``ExecStart=`` argv of one of the example's systemd units,
  with the example's absolute paths mapped onto the test's sockets and directories, so the
  relay and linkerd-env run with exactly the flags the example ships.
* :class:`ProxySupervisor` -- runs ``linkerd2-proxy`` the way ``linkerd-proxy.service`` does
  (environment = linkerd.env + mesh.env) and restarts it when ``linkerd-env``'s
  ``--restart-command`` asks, synchronously like ``systemctl try-restart``. It never
  restarts the proxy on its own, so a crash shows up as a dead proxy, not a silent restart.

Binary: ``$LINKERD2_PROXY_BIN`` or what ``scripts/install-linkerd-proxy.sh --print-bin`` names.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import shlex
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from spire import REPO_ROOT, _Process, free_port

EXAMPLE = REPO_ROOT / "examples" / "linkerd-vm"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-linkerd-proxy.sh"

TRUST_DOMAIN = "root.linkerd.cluster.local"
PROXY_ID = f"spiffe://{TRUST_DOMAIN}/external-workload"
#: Registered for the same uid as the proxy's ID: the relay must never show it to the proxy.
OTHER_ID = f"spiffe://{TRUST_DOMAIN}/other-app"
SERVER_NAME = "external-workload.cluster.local"  # the example's --server-name
TAP_SVC_NAME = "tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local"


class ProxyBinaryMissing(RuntimeError):
    """linkerd2-proxy is not built where we look."""


def find_proxy_bin() -> Path:
    """``$LINKERD2_PROXY_BIN``, else the install script's cached binary; ProxyBinaryMissing if absent."""
    env = os.environ.get("LINKERD2_PROXY_BIN")
    if env:
        path, origin = Path(env), "$LINKERD2_PROXY_BIN"
    else:
        origin = f"{INSTALL_SCRIPT.relative_to(REPO_ROOT)} --print-bin"
        done = subprocess.run(
            ["bash", str(INSTALL_SCRIPT), "--print-bin"], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise ProxyBinaryMissing(f"{origin} failed: {done.stderr.strip()}")
        path = Path(done.stdout.strip().splitlines()[-1])
    if not os.access(path, os.X_OK):
        raise ProxyBinaryMissing(
            f"linkerd2-proxy not found at {path} (from {origin}); run scripts/install-linkerd-proxy.sh "
            "(needs cargo and ../shared/vendor, or SPIFFE_BRIDGE_VENDOR) or set LINKERD2_PROXY_BIN"
        )
    return path


# --------------------------------------------------------------------------
# the trust anchor


class TrustAnchor:
    """A Linkerd-style trust anchor: key and self-signed certificate, valid for a day."""

    def __init__(self) -> None:
        now = _dt.datetime.now(_dt.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TRUST_DOMAIN)])
        usage = dict.fromkeys(
            (
                "digital_signature",
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "encipher_only",
                "decipher_only",
            ),
            False,
        )
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=1))
            .not_valid_after(now + _dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(key_cert_sign=True, crl_sign=True, **usage), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def install(self, cert_path: Path, key_path: Path) -> None:
        """Write (or replace, each file atomically) the ``ca.crt``/``ca.key`` pair SPIRE reads."""
        key_pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        for path, data, mode in ((key_path, key_pem, 0o600), (cert_path, self.pem, 0o644)):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.chmod(mode)
            tmp.replace(path)


# --------------------------------------------------------------------------
# the example's units


def unit_exec_start(unit: str, paths: Mapping[str, str]) -> list[str]:
    """argv of ``ExecStart=`` in ``examples/linkerd-vm/systemd/<unit>``, each word with the
    ``paths`` prefixes (example path -> test path) replaced; the spiffe-bridge binary
    becomes this interpreter's ``-m spiffe_bridge``."""
    text = (EXAMPLE / "systemd" / unit).read_text()
    joined = re.sub(r"\\\n", " ", text)
    (line,) = [ln for ln in joined.splitlines() if ln.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0] == "/opt/spiffe-bridge/bin/spiffe-bridge", argv
    out = [sys.executable, "-m", "spiffe_bridge"]
    for word in argv[1:]:
        for old, new in paths.items():
            word = word.replace(old, new)
        out.append(word)
    return out


def drop_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option`` and its value (e.g. --socket-owner, which needs other users)."""
    i = argv.index(option)
    return argv[:i] + argv[i + 2 :]


def replace_option(argv: list[str], option: str, value: str) -> list[str]:
    i = argv.index(option)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def read_env_file(path: Path) -> dict[str, str]:
    """The variables an EnvironmentFile defines, read by a POSIX shell (as local-check.sh does)."""
    done = subprocess.run(
        ["bash", "-c", 'set -a; . "$1"; exec env -0', "_", str(path)],
        capture_output=True,
        timeout=10,
        check=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    pairs = (item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    return {k: v for k, v in pairs if k.startswith("LINKERD2_PROXY_")}


# --------------------------------------------------------------------------
# the proxy


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    """(status, body); (0, "") while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (labels as printed; no HELP/TYPE lines)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        try:
            out[series] = float(value)
        except ValueError:
            continue
    return out


#: The restart command's client side: ask the supervisor, wait for its answer (like systemctl).
_RESTART_CLIENT = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_UNIX)\n"
    "s.settimeout(60)\n"
    "s.connect(sys.argv[1])\n"
    "s.sendall(b'restart\\n')\n"
    "answer=s.makefile().readline().strip()\n"
    "print(answer)\n"
    "sys.exit(0 if answer=='restarted' else 1)\n"
)


class ProxySupervisor:
    """linkerd2-proxy with the example's environment, restarted only on request."""

    def __init__(self, binary: Path, env_file: Path, work: Path, control_sock: Path) -> None:
        self.binary = binary
        self.env_file = env_file
        self.work = work
        self.log_path = work / "linkerd2-proxy.log"
        self.control_sock = control_sock
        self.admin_port = free_port()
        self.control_port = free_port()
        self.inbound_port = free_port()
        self.outbound_port = free_port()
        self.starts = 0
        self.restarts = 0
        self.run_offsets: list[int] = []  # len(log()) at each start: where that run's output begins
        self.process: _Process | None = None
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # -- environment ---------------------------------------------------------

    def mesh_env(self) -> dict[str, str]:
        """proxy/mesh.env with the control plane moved to closed loopback ports (identity needs
        none of it), plus loopback listeners and a tap service name (enables the control port)."""
        env = read_env_file(EXAMPLE / "proxy" / "mesh.env")
        for svc in ("DESTINATION", "POLICY"):
            env[f"LINKERD2_PROXY_{svc}_SVC_ADDR"] = f"127.0.0.1:{free_port()}"
        env.update(
            LINKERD2_PROXY_ADMIN_LISTEN_ADDR=f"127.0.0.1:{self.admin_port}",
            LINKERD2_PROXY_CONTROL_LISTEN_ADDR=f"127.0.0.1:{self.control_port}",
            LINKERD2_PROXY_INBOUND_LISTEN_ADDR=f"127.0.0.1:{self.inbound_port}",
            LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR=f"127.0.0.1:{self.outbound_port}",
            LINKERD2_PROXY_TAP_SVC_NAME=TAP_SVC_NAME,
            LINKERD2_PROXY_LOG="warn,linkerd=info",
            LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD="1s",
        )
        return env

    def env(self) -> dict[str, str]:
        """What systemd gives the unit: both EnvironmentFiles (later one wins), nothing inherited."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **read_env_file(self.env_file),
            **self.mesh_env(),
        }

    # -- lifecycle -------------------------------------------------------------

    @property
    def restart_command(self) -> str:
        """The ``--restart-command`` for linkerd-env (stands in for ``systemctl try-restart``)."""
        return shlex.join([sys.executable, "-c", _RESTART_CLIENT, str(self.control_sock)])

    def serve_restarts(self) -> None:
        """Start answering restart requests on ``control_sock``."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.control_sock))
        listener.listen(4)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, name="proxy-supervisor", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed by close()
            with conn:
                conn.settimeout(30)
                try:
                    request = conn.makefile().readline().strip()
                    if request == "restart":
                        self.restart()
                        answer = "restarted"
                    else:
                        answer = f"unknown request {request!r}"
                except Exception as exc:  # the client reports it; linkerd-env logs it
                    answer = f"failed: {exc!r}"
                with contextlib.suppress(OSError):
                    conn.sendall(answer.encode() + b"\n")

    def start(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        self.run_offsets.append(len(self.log()))
        self.process = _Process(
            "linkerd2-proxy", [str(self.binary)], self.log_path, self.work, env=self.env()
        )
        self.process.start()
        self.starts += 1

    def restart(self) -> None:
        """Stop (SIGTERM, then SIGKILL) and start again with the current env file."""
        with self._lock:
            self.restarts += 1
            if self.process is not None:
                self.process.stop(timeout=10)
            self._start()

    def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the accept() above (Linux)
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            if self.process is not None:
                self.process.stop(timeout=10)

    # -- observation -----------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        """True while the proxy runs; SpireProcessDied (with its log) if it exited."""
        assert self.process is not None
        self.process.check_alive()
        return True

    def environ(self, timeout: float = 15.0) -> dict[str, str]:
        """The running proxy's environment, as the kernel holds it (``/proc/<pid>/environ``).

        The file reads empty while a restart is in flight (the old process is a zombie, or the
        new one has not exec'd yet), so it is read again until it holds the environment.
        """
        import time

        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                raw = Path(f"/proc/{self.pid}/environ").read_bytes()
                if raw:
                    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
            if time.monotonic() > deadline:
                raise AssertionError(f"no environment for the proxy (pid {self.pid}) within {timeout}s")
            time.sleep(0.05)  # polling /proc: there is no event for "a process has exec'd"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def current_run_log(self) -> str:
        """The output of the running proxy (since its last start)."""
        return self.log()[self.run_offsets[-1] :] if self.run_offsets else ""

    def admin(self, path: str) -> tuple[int, str]:
        return http_get(f"http://127.0.0.1:{self.admin_port}{path}")

    def ready(self) -> bool:
        return self.alive() and self.admin("/ready")[0] == 200

    def metrics(self) -> dict[str, float]:
        code, body = self.admin("/metrics")
        assert code == 200, f"/metrics answered {code}"
        return parse_metrics(body)

    def refreshes(self, result: str) -> int:
        """``control_identity_cert_refreshes_total{result=...}`` (0 before the first one)."""
        return int(self.metrics().get(f'control_identity_cert_refreshes_total{{result="{result}"}}', 0))

    def presented_leaf(self, roots_pem: bytes) -> x509.Certificate:
        """The leaf the control port presents, verified against ``roots_pem``."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # SPIFFE leaves carry a URI SAN, not the SNI name
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=roots_pem.decode())
        with (
            socket.create_connection(("127.0.0.1", self.control_port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der, "no peer certificate"
        return x509.load_der_x509_certificate(der)
