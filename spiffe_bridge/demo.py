"""``spiffe-bridge demo``: the whole path on an embedded default, in a few seconds.

Starts the dev agent on a temporary socket, runs the real sidecar daemon
against it with every output format, forces one rotation, checks that each
file set switched in one step and that the chain verifies (with ``openssl
verify`` when it is installed, and with our own validator), prints a summary
and exits 0. The files it leaves are ready for nginx.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spiffe_bridge.formats import X509_FORMATS

#: Where each format goes, relative to the output directory: a directory named after it.
FORMAT_DIRS = {name: name for name in X509_FORMATS}
#: Formats holding only trust bundles: an SVID rotation leaves them as they are.
BUNDLE_ONLY = ("linkerd", "bundle-map")
SPIFFE_ID = "spiffe://example.org/demo/web"
#: The socket the printed next step starts a dev agent on.
NEXT_SOCKET = "/tmp/spiffe-bridge-dev.sock"


@dataclass
class _Probe:
    """A reload action that tells the demo when a complete set reached disk."""

    writes: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    def after_write(self, first: bool, changed: bool) -> bool:
        with self.cond:
            self.writes += 1
            self.cond.notify_all()
        return True

    def stop(self) -> None:
        return None

    def wait_for(self, n: int, timeout: float = 10.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.writes >= n, timeout):
                raise TimeoutError(f"the sidecar did not write set #{n} within {timeout}s")


def _config_text(socket: str, out: Path) -> str:
    outputs = "".join(
        f'\n[[outputs]]\nformat = "{fmt}"\ndir = "{out / sub}"\nlayout = "symlink"\n'
        + ('linkerd_server_name = "web.demo.example.org"\n' if fmt == "linkerd" else "")
        for fmt, sub in FORMAT_DIRS.items()
        if fmt != "pem"
    )
    return (
        f'agent_address = "unix://{socket}"\n'
        f'cert_dir = "{out / "pem"}"\n'
        'svid_file_name = "svid.pem"\nsvid_key_file_name = "svid_key.pem"\n'
        'svid_bundle_file_name = "svid_bundle.pem"\nlayout = "symlink"\n'
        'include_federated_domains = true\nfederated_layout = "per-trust-domain"\n'
        'jwt_bundle_file_name = "jwt_bundle.json"\n'
        'jwt_svids = [{ jwt_audience = "demo-audience", jwt_svid_file_name = "jwt_svid.token" }]\n'
        "[health_checks]\nlistener_enabled = false\n" + outputs
    )


class Demo:
    """One demo run writing into ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.lines: list[str] = []
        self.failures: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        """Record one check in the summary."""
        self.lines.append(f"  [{'ok' if ok else 'FAILED'}] {what}")
        if not ok:
            self.failures.append(what)

    def run(self) -> int:
        from spiffe_bridge.devagent.server import DevAgent
        from spiffe_bridge.sidecar import config as sidecar_config
        from spiffe_bridge.sidecar import plan
        from spiffe_bridge.sidecar.actions import Actions
        from spiffe_bridge.sidecar.runner import Daemon

        self.out.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="sb-demo-", dir="/tmp")
        socket = os.path.join(tmp, "agent.sock")
        agent = DevAgent(
            socket, identities=[f"{SPIFFE_ID}#web"], intermediate=True, federate_with=["partner.example"]
        )
        try:
            agent.start()
            text = _config_text(socket, self.out)
            config = sidecar_config.build(sidecar_config.parse_text(text, "toml"), "<demo>", environ={})
            plans, _warnings = plan.build(config, {})
            daemon = Daemon(config, plans)
            probe = _Probe()
            daemon.actions = Actions([probe])
            errors: list[BaseException] = []
            driver = threading.Thread(target=self._drive, args=(agent, daemon, probe, errors), daemon=True)
            driver.start()
            code = daemon.run()
            driver.join(5)
            if errors:
                self.check(False, f"demo step failed: {errors[0]}")
            self.check(code == 0, f"sidecar exited with {code}")
        finally:
            agent.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        print(
            "Started a stand-in Workload API agent (spiffe-bridge's dev agent, not SPIRE) on a temporary "
            "socket and ran the real sidecar against it with every format, through one rotation."
        )
        print("\n".join(self.lines))
        if self.failures:
            print(f"\n{len(self.failures)} check(s) failed")
            return 1
        conf = self._write_next_config()
        print(
            "\nAll checks passed: every format was written, switched as one set on rotation, and "
            "verifies against the bundle.\n"
            f"The files work as they are, e.g. nginx with ssl_certificate {self.out / 'pem' / 'svid.pem'}\n"
            "Next, run the sidecar yourself against a dev agent:\n"
            f"  spiffe-bridge dev-agent --socket {NEXT_SOCKET} &\n"
            f"  spiffe-bridge run -config {conf}"
        )
        return 0

    def _write_next_config(self) -> Path:
        """A spiffe-helper style config for the printed next step (the dev agent's socket, ./sidecar)."""
        conf = self.out / "helper.conf"
        conf.write_text(
            f'agent_address = "unix://{NEXT_SOCKET}"\n'
            f'cert_dir = "{self.out / "sidecar"}"\n'
            'svid_file_name = "svid.pem"\n'
            'svid_key_file_name = "svid_key.pem"\n'
            'svid_bundle_file_name = "svid_bundle.pem"\n'
        )
        return conf

    def _drive(self, agent: Any, daemon: Any, probe: _Probe, errors: list[BaseException]) -> None:
        """Runs beside the daemon: wait for files, rotate, verify, stop the daemon."""
        try:
            probe.wait_for(1)
            before = self._snapshot()
            agent.rotate()
            probe.wait_for(2)
            after = self._snapshot()
            self._report(before, after)
        except BaseException as exc:
            errors.append(exc)
        finally:
            daemon.request_stop(0)

    def _snapshot(self) -> dict[str, tuple[str, dict[str, bytes]]]:
        """For each output dir: the version ``..data`` points at, and the bytes of every file in it.

        Only what the writer put in the version directory counts: files of the user's own
        beside the set (a README, an older copy) are none of the demo's business.
        """
        snap = {}
        for sub in FORMAT_DIRS.values():
            data = self.out / sub / "..data"
            version = os.readlink(data) if data.is_symlink() else ""
            files: dict[str, bytes] = {}
            for root, _dirs, names in os.walk(data, followlinks=True):
                for name in names:
                    path = Path(root, name)
                    files[str(path.relative_to(data))] = path.read_bytes()
            snap[sub] = (version, files)
        return snap

    def _report(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        from spiffe_bridge.spiffeid import TrustDomain
        from spiffe_bridge.x509bundle import X509Bundle
        from spiffe_bridge.x509svid import parse_svid

        pem = self.out / "pem"
        chain = _pem_ders(pem / "svid.pem")
        bundle = X509Bundle.parse_der(
            TrustDomain("example.org"), b"".join(_pem_ders(pem / "svid_bundle.pem"))
        )
        key_der = _pem_ders(pem / "svid_key.pem", "PRIVATE KEY")[0]
        svid = parse_svid(SPIFFE_ID, b"".join(chain), key_der, bundle)
        self.lines.append(f"SPIFFE ID   {svid.spiffe_id}")
        self.lines.append(f"expires     {svid.expires_at:%Y-%m-%d %H:%M:%S} UTC")
        federated = sorted(p.name for p in (pem / "federated").glob("*"))
        self.lines.append(f"federated   {', '.join(federated) or 'none'} (one bundle file per trust domain)")
        self.lines.append(f"output      {self.out}")
        for fmt, sub in FORMAT_DIRS.items():
            names = ", ".join(sorted(after[sub][1]))
            self.lines.append(f"  {fmt:<10} {sub}/: {names}")
        self.lines.append("checks")
        self.check(True, "chain, key and bundle pass spiffe-bridge's X509-SVID validation")
        openssl = shutil.which("openssl")
        if openssl:
            result = subprocess.run(
                [
                    openssl,
                    "verify",
                    "-CAfile",
                    str(pem / "svid_bundle.pem"),
                    "-untrusted",
                    str(pem / "svid.pem"),
                    str(pem / "svid.pem"),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            self.check(
                result.returncode == 0, f"openssl verify: {result.stdout.strip() or result.stderr.strip()}"
            )
        else:
            self.lines.append("  [skip] openssl not installed; chain checked by spiffe-bridge only")
        for sub, (version, files) in after.items():
            old_version, old_files = before[sub]
            switched = version != old_version and all(
                (self.out / sub / version / name).exists() for name in files
            )
            if sub in (FORMAT_DIRS[f] for f in BUNDLE_ONLY):
                # The SVID rotated but the trust anchors did not: nothing to rewrite, no proxy restart.
                self.check(
                    files == old_files and version == old_version, f"{sub}/ anchors unchanged: no rewrite"
                )
                continue
            self.check(switched, f"{sub}/ switched to a new version directory in one rename ({version})")
            self.check(files != old_files, f"{sub}/ content changed on rotation")
        jwt_path = pem / "jwt_svid.token"
        bundle_doc = json.loads((pem / "jwt_bundle.json").read_text())
        self.check(
            jwt_path.stat().st_mode & 0o777 == 0o600 and "example.org" in bundle_doc,
            "JWT-SVID (0600) and JWT bundle written",
        )
        self.check((pem / "svid_key.pem").stat().st_mode & 0o777 == 0o600, "private key is mode 0600")


def _pem_ders(path: Path, label: str = "CERTIFICATE") -> list[bytes]:
    """The DER payloads of every ``label`` block in a PEM file."""
    import base64

    text = path.read_text()
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    out = []
    for chunk in text.split(begin)[1:]:
        out.append(base64.b64decode(chunk.split(end)[0]))
    return out
