"""A real SPIRE server + agent on loopback and temporary paths, for interop tests.

Self-contained on purpose (stdlib + ``cryptography``, no ``spiffe_bridge``
imports) so any test can use it to check our client against the real thing.

Layout of one deployment:

* ``spire-server``: sqlite datastore, ``bind_address 127.0.0.1`` on a free
  port, ``join_token`` node attestation, in-memory key manager, private API
  socket ``<sock_dir>/server.sock``.
* ``spire-agent``: attested with a one-time join token (node alias
  ``spiffe://<td>/node``), ``unix`` workload attestor, Workload API socket
  ``<sock_dir>/agent.sock`` (``sock_dir`` is a short ``/tmp/spire-XXXX`` dir:
  Unix socket paths are limited to 108 bytes), trust bundle taken from the
  server (no insecure bootstrap), health listener on a free loopback port.
* registration entries for this process's uid (``unix:uid:<uid>``).
* a second, federated trust domain whose CA lives only in this process
  (:class:`FederatedCA`); its bundle is set with ``spire-server bundle set``.

Binaries come from ``$SPIRE_BIN_DIR`` or the cache dir printed by
``scripts/install-spire.sh --print-bin-dir`` (``_support.binaries.spire_bin_dir``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _support.wait import wait_until as _wait_until
from spire_ca import FederatedCA

REPO_ROOT = Path(__file__).resolve().parents[2]


class SpireError(RuntimeError):
    """A SPIRE process or CLI call failed; the message carries its log tail."""


class SpireProcessDied(SpireError):
    """A SPIRE server or agent process exited while it should be running."""


# --------------------------------------------------------------------------
# binaries, ports, paths


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (tiny race: the caller binds it soon)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def short_tmp_dir(prefix: str = "spire-") -> Path:
    """A fresh directory with a short path, fit for Unix sockets (108-byte limit)."""
    base = "/tmp" if os.path.isdir("/tmp") and os.access("/tmp", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def _die_with_parent() -> list[str]:
    """argv prefix that SIGTERMs the SPIRE process if the test runner dies without teardown.

    util-linux ``setpriv --pdeathsig`` (PR_SET_PDEATHSIG), not a ``preexec_fn``: with one,
    subprocess must fork() instead of vfork(), so gRPC's pthread_atfork handlers run in the
    child; once the test process has used gRPC they restart its event engine there,
    ``close_fds`` closes its epoll fd and gRPC aborts the child before exec (the agent
    "exited with code -6/-11" without a line of output, ~1 start in 40). No setpriv: no
    death signal.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """``_support.wait.wait_until`` for SPIRE: any error means "not yet" except a dead process.

    Raises TimeoutError with ``on_timeout()`` (a log tail) at the deadline.
    """
    return _wait_until(
        condition,
        what,
        timeout,
        interval=interval,
        ignore=(Exception,),
        fatal=(SpireProcessDied,),
        detail=on_timeout,
        error=TimeoutError,
    )


# --------------------------------------------------------------------------
# processes


class _Process:
    """One long-running binary (SPIRE, or another daemon a test runs) with its output in a log file.

    ``env`` None inherits this process's environment.
    """

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.running:
            raise SpireError(f"{self.name} is already running")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.popen = subprocess.Popen(
                [*_die_with_parent(), *self.argv],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise SpireProcessDied(f"{self.name} exited with code {self.popen.returncode}\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; always reaps the child."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.terminate()
            if self.wait(timeout) is None:
                self.popen.kill()
                self.popen.wait(timeout=10)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"({self.log_path} unreadable)"
        return f"--- last {lines} lines of {self.log_path} ---\n" + "\n".join(text[-lines:])


def _run(
    argv: Sequence[str], timeout: float, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )


def _hcl_str(value: str | Path) -> str:
    return json.dumps(str(value))  # HCL strings accept JSON escaping


# --------------------------------------------------------------------------
# server


@dataclass
class Entry:
    """A registration entry as created through ``spire-server entry create``."""

    entry_id: str
    spiffe_id: str
    parent_id: str
    selectors: list[str]
    hint: str = ""
    x509_svid_ttl: int = 0
    jwt_svid_ttl: int = 0
    federates_with: list[str] = field(default_factory=list)
    dns_names: list[str] = field(default_factory=list)


class SpireServer:
    def __init__(
        self,
        bin_dir: Path,
        data_dir: Path,
        sock_dir: Path,
        trust_domain: str,
        *,
        ca_ttl: str = "1h",
        default_x509_svid_ttl: str = "5m",
        default_jwt_svid_ttl: str = "5m",
        agent_ttl: str = "10m",
        log_level: str = "INFO",
    ) -> None:
        self.binary = bin_dir / "spire-server"
        self.data_dir = data_dir
        self.trust_domain = trust_domain
        self.socket_path = sock_dir / "server.sock"
        self.port = free_port()
        self.config_path = data_dir / "server.conf"
        self.log_path = data_dir / "server.log"
        self.ca_ttl = ca_ttl
        self.default_x509_svid_ttl = default_x509_svid_ttl
        self.default_jwt_svid_ttl = default_jwt_svid_ttl
        self.agent_ttl = agent_ttl
        self.log_level = log_level
        self.process = _Process(
            "spire-server",
            [str(self.binary), "run", "-config", str(self.config_path)],
            self.log_path,
            data_dir,
        )

    def write_config(self) -> None:
        d = self.data_dir
        self.config_path.write_text(
            f"""server {{
    bind_address = "127.0.0.1"
    bind_port = "{self.port}"
    socket_path = {_hcl_str(self.socket_path)}
    trust_domain = {_hcl_str(self.trust_domain)}
    data_dir = {_hcl_str(d / "data")}
    log_level = {_hcl_str(self.log_level)}
    ca_ttl = {_hcl_str(self.ca_ttl)}
    ca_subject {{
        country = ["US"]
        organization = ["spiffe-bridge interop"]
        common_name = ""
    }}
    default_x509_svid_ttl = {_hcl_str(self.default_x509_svid_ttl)}
    default_jwt_svid_ttl = {_hcl_str(self.default_jwt_svid_ttl)}
    agent_ttl = {_hcl_str(self.agent_ttl)}
    experimental {{
        # pick up entry changes within a second instead of 5s
        cache_reload_interval = "1s"
    }}
}}

plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = {_hcl_str(d / "data" / "datastore.sqlite3")}
        }}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
}}
"""
        )

    def start(self, timeout: float = 30.0) -> None:
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        self.write_config()
        self.process.start()
        wait_until(self._healthy, timeout, what="spire-server healthcheck", on_timeout=self.process.log_tail)

    def _healthy(self) -> bool:
        self.process.check_alive()
        if not self.socket_path.exists():
            return False
        return self.cli("healthcheck", check=False, timeout=5).returncode == 0

    def stop(self) -> None:
        self.process.stop()

    # -- CLI -------------------------------------------------------------

    def cli(
        self, *args: str, check: bool = True, timeout: float = 30.0, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``spire-server <command words> -socketPath <sock> <flags>``."""
        words = []
        rest = list(args)
        while rest and not rest[0].startswith("-"):
            words.append(rest.pop(0))
        argv = [str(self.binary), *words, "-socketPath", str(self.socket_path), *rest]
        res = _run(argv, timeout, input_text)
        if check and res.returncode != 0:
            raise SpireError(f"{' '.join(argv)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        return res

    def cli_json(self, *args: str, timeout: float = 30.0) -> Any:
        return json.loads(self.cli(*args, "-output", "json", timeout=timeout).stdout)

    def bundle_pem(self) -> str:
        return self.cli("bundle", "show").stdout

    def generate_join_token(self, agent_spiffe_id: str | None = None, ttl: int = 600) -> str:
        args = ["token", "generate", "-ttl", str(ttl)]
        if agent_spiffe_id:
            args += ["-spiffeID", agent_spiffe_id]
        out = self.cli_json(*args)
        return str(out["value"])

    def create_entry(
        self,
        spiffe_id: str,
        parent_id: str,
        selectors: Iterable[str],
        *,
        hint: str = "",
        x509_svid_ttl: int = 0,
        jwt_svid_ttl: int = 0,
        federates_with: Iterable[str] = (),
        dns_names: Iterable[str] = (),
    ) -> Entry:
        selectors = list(selectors)
        federates_with = list(federates_with)
        dns_names = list(dns_names)
        args = ["entry", "create", "-spiffeID", spiffe_id, "-parentID", parent_id]
        for s in selectors:
            args += ["-selector", s]
        if hint:
            args += ["-hint", hint]
        if x509_svid_ttl:
            args += ["-x509SVIDTTL", str(x509_svid_ttl)]
        if jwt_svid_ttl:
            args += ["-jwtSVIDTTL", str(jwt_svid_ttl)]
        for td in federates_with:
            args += ["-federatesWith", td if td.startswith("spiffe://") else f"spiffe://{td}"]
        for name in dns_names:
            args += ["-dns", name]
        out = self.cli_json(*args)
        result = out["results"][0]
        status = result.get("status", {})
        if status.get("code", 0) != 0:
            raise SpireError(f"entry create {spiffe_id}: {status}")
        return Entry(
            entry_id=result["entry"]["id"],
            spiffe_id=spiffe_id,
            parent_id=parent_id,
            selectors=selectors,
            hint=hint,
            x509_svid_ttl=x509_svid_ttl,
            jwt_svid_ttl=jwt_svid_ttl,
            federates_with=federates_with,
            dns_names=dns_names,
        )

    def delete_entry(self, entry_id: str) -> None:
        self.cli("entry", "delete", "-entryID", entry_id)

    def show_entries(self) -> list[dict[str, Any]]:
        out = self.cli_json("entry", "show")
        return list(out.get("entries") or [])

    def set_federated_bundle(self, trust_domain: str, bundle_path: Path, fmt: str = "spiffe") -> None:
        td = trust_domain if trust_domain.startswith("spiffe://") else f"spiffe://{trust_domain}"
        self.cli("bundle", "set", "-id", td, "-path", str(bundle_path), "-format", fmt)


# --------------------------------------------------------------------------
# agent


class SpireAgent:
    def __init__(
        self,
        bin_dir: Path,
        data_dir: Path,
        sock_dir: Path,
        trust_domain: str,
        server_port: int,
        trust_bundle_path: Path,
        *,
        log_level: str = "INFO",
        sync_interval: str = "1s",
        brokers: Sequence[str] = (),
    ) -> None:
        self.binary = bin_dir / "spire-agent"
        # SPIFFE Broker API endpoint (experimental.broker), on when ``brokers`` lists allowed broker IDs;
        # its socket must be outside the Workload API socket's directory (the agent refuses to start).
        self.brokers = list(brokers)
        self.broker_socket_path = sock_dir.with_name(sock_dir.name + "-broker") / "broker.sock"
        self.data_dir = data_dir
        self.trust_domain = trust_domain
        self.server_port = server_port
        self.trust_bundle_path = trust_bundle_path
        self.socket_path = sock_dir / "agent.sock"
        self.health_port = free_port()
        self.config_path = data_dir / "agent.conf"
        self.log_path = data_dir / "agent.log"
        self.log_level = log_level
        self.sync_interval = sync_interval
        self.process: _Process | None = None
        self.starts = 0

    def write_config(self) -> None:
        d = self.data_dir
        self.config_path.write_text(
            f"""agent {{
    data_dir = {_hcl_str(d / "data")}
    log_level = {_hcl_str(self.log_level)}
    server_address = "127.0.0.1"
    server_port = "{self.server_port}"
    socket_path = {_hcl_str(self.socket_path)}
    trust_bundle_path = {_hcl_str(self.trust_bundle_path)}
    trust_domain = {_hcl_str(self.trust_domain)}
    experimental {{
        # poll the server every second so entry changes and rotations show quickly
        sync_interval = {_hcl_str(self.sync_interval)}{self._broker_block()}
    }}
}}

plugins {{
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "disk" {{
        plugin_data {{
            directory = {_hcl_str(d / "data")}
        }}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
}}

health_checks {{
    listener_enabled = true
    bind_address = "127.0.0.1"
    bind_port = "{self.health_port}"
    live_path = "/live"
    ready_path = "/ready"
}}
"""
        )

    def _broker_block(self) -> str:
        if not self.brokers:
            return ""
        allowed = "".join(
            f"""
                {{
                    id = {_hcl_str(b)}
                    allowed_reference_types = [
                        {{ type_url = "type.googleapis.com/spiffe.broker.WorkloadPIDReference" }},
                    ]
                }},"""
            for b in self.brokers
        )
        return f"""
        broker {{
            socket_path = {_hcl_str(self.broker_socket_path)}
            brokers = [{allowed}
            ]
        }}"""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def start(self, join_token: str | None = None, timeout: float = 30.0) -> None:
        """Start the agent; ``join_token`` only on the first start (it is single use:
        later starts re-use the agent SVID kept in the data dir)."""
        if self.running:
            raise SpireError("spire-agent is already running")
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        if self.brokers:
            self.broker_socket_path.parent.mkdir(mode=0o700, exist_ok=True)
        self.write_config()
        argv = [str(self.binary), "run", "-config", str(self.config_path)]
        if join_token:
            argv += ["-joinToken", join_token]
        self.process = _Process("spire-agent", argv, self.log_path, self.data_dir)
        self.process.start()
        self.starts += 1
        wait_until(self.healthy, timeout, what="spire-agent healthcheck", on_timeout=self.process.log_tail)

    def healthy(self) -> bool:
        """Agent process alive, Workload API socket answering the gRPC health check."""
        if self.process is not None:
            self.process.check_alive()
        if not self.socket_path.exists():
            return False
        res = _run([str(self.binary), "healthcheck", "-socketPath", str(self.socket_path)], timeout=10)
        return res.returncode == 0

    def http_health(self, path: str = "/ready") -> int:
        """Status code of the agent's health listener (``/live`` or ``/ready``)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            self.process.stop(timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL) and reap the process."""
        if self.process is not None and self.process.running:
            self.process.signal(sig)
            if self.process.wait(10) is None:
                self.process.kill()

    def fetch_x509(self, timeout: float = 5.0) -> dict[str, Any]:
        """One FetchX509SVID response via ``spire-agent api fetch x509 -output json``."""
        res = _run(
            [
                str(self.binary),
                "api",
                "fetch",
                "x509",
                "-socketPath",
                str(self.socket_path),
                "-timeout",
                f"{timeout:g}s",
                "-output",
                "json",
            ],
            timeout=timeout + 10,
        )
        if res.returncode != 0:
            raise SpireError(f"spire-agent api fetch x509 failed: {res.stdout}{res.stderr}".strip())
        data = json.loads(res.stdout)
        if isinstance(data, list):  # cliprinter prints a list of responses
            data = data[0] if data else {}
        return dict(data)

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process else "(agent never started)"


# --------------------------------------------------------------------------
# the whole deployment


@dataclass
class EntrySpec:
    """What the deployment registers for the test process at start."""

    path: str  # SPIFFE ID path, e.g. "/workload/web"
    hint: str = ""
    federates: bool = False


DEFAULT_ENTRIES = (
    EntrySpec("/workload/web", hint="web", federates=True),
    EntrySpec("/workload/db", hint="db"),
    EntrySpec("/workload/batch", hint="batch"),
)


class SpireDeployment:
    """A running SPIRE server + agent with entries for this process's uid.

    Attributes of interest: ``socket_path`` (Path of the Workload API socket),
    ``workload_api_address`` (``unix:<path>``, what SPIFFE_ENDPOINT_SOCKET
    takes), ``trust_domain``, ``federated_trust_domain``, ``federated_ca``,
    ``entries`` (the :class:`Entry` list registered for us), ``svid_ttl``.
    """

    def __init__(
        self,
        bin_dir: Path,
        base_dir: Path,
        *,
        trust_domain: str = "spire.test",
        federated_trust_domain: str | None = "federated.test",
        entries: Sequence[EntrySpec] = DEFAULT_ENTRIES,
        svid_ttl: int = 30,
        jwt_svid_ttl: int = 300,
        ca_ttl: str = "1h",
        uid: int | None = None,
        brokers: Sequence[str] = (),
    ) -> None:
        self.bin_dir = bin_dir
        self.base_dir = base_dir
        self.sock_dir = short_tmp_dir()
        self.trust_domain = trust_domain
        self.federated_trust_domain = federated_trust_domain
        self.entry_specs = list(entries)
        self.svid_ttl = svid_ttl
        self.jwt_svid_ttl = jwt_svid_ttl
        self.uid = os.getuid() if uid is None else uid
        self.node_id = f"spiffe://{trust_domain}/node"
        self.server = SpireServer(bin_dir, base_dir / "server", self.sock_dir, trust_domain, ca_ttl=ca_ttl)
        (base_dir / "server").mkdir(parents=True, exist_ok=True)
        (base_dir / "agent").mkdir(parents=True, exist_ok=True)
        self.agent = SpireAgent(
            bin_dir,
            base_dir / "agent",
            self.sock_dir,
            trust_domain,
            self.server.port,
            base_dir / "agent" / "bootstrap.pem",
            brokers=[b if b.startswith("spiffe://") else f"spiffe://{trust_domain}{b}" for b in brokers],
        )
        self.federated_ca: FederatedCA | None = None
        self.federated_paths: dict[str, Path] = {}
        self.entries: list[Entry] = []
        self.timings: dict[str, float] = {}

    # -- addresses ---------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        return self.agent.socket_path

    @property
    def workload_api_address(self) -> str:
        return f"unix:{self.agent.socket_path}"

    @property
    def broker_address(self) -> str:
        """The agent's Broker API endpoint (only served when the deployment has ``brokers``)."""
        return f"unix://{self.agent.broker_socket_path}"

    @property
    def selector(self) -> str:
        return f"unix:uid:{self.uid}"

    def spiffe_id(self, path: str) -> str:
        return f"spiffe://{self.trust_domain}{path}"

    @property
    def expected_spiffe_ids(self) -> set[str]:
        return {e.spiffe_id for e in self.entries}

    # -- lifecycle ----------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        t0 = time.monotonic()
        self.server.start()
        self.timings["server_ready_s"] = time.monotonic() - t0

        bundle = self.server.bundle_pem()
        self.agent.trust_bundle_path.write_text(bundle)
        token = self.server.generate_join_token(self.node_id)

        if self.federated_trust_domain:
            self.federated_ca = FederatedCA(self.federated_trust_domain)
            self.federated_paths = self.federated_ca.write(self.base_dir)
            self.server.set_federated_bundle(self.federated_trust_domain, self.federated_paths["bundle"])

        for spec in self.entry_specs:
            self.create_entry(
                spec.path,
                hint=spec.hint,
                federates_with=[self.federated_trust_domain]
                if spec.federates and self.federated_trust_domain
                else (),
            )

        t1 = time.monotonic()
        self.agent.start(join_token=token)
        self.timings["agent_healthy_s"] = time.monotonic() - t1
        self.wait_for_svids(timeout=timeout)
        self.timings["svids_ready_s"] = time.monotonic() - t1
        self.timings["total_start_s"] = time.monotonic() - t0

    def stop(self) -> None:
        try:
            self.agent.stop()
        finally:
            try:
                self.server.stop()
            finally:
                shutil.rmtree(self.sock_dir, ignore_errors=True)
                shutil.rmtree(self.agent.broker_socket_path.parent, ignore_errors=True)

    # -- entries -------------------------------------------------------------

    def create_entry(
        self,
        path_or_id: str,
        *,
        hint: str = "",
        x509_svid_ttl: int | None = None,
        jwt_svid_ttl: int | None = None,
        federates_with: Iterable[str] = (),
        selectors: Iterable[str] | None = None,
        parent_id: str | None = None,
        dns_names: Iterable[str] = (),
    ) -> Entry:
        """Register a workload entry (default: for this process's uid, under the node alias)."""
        spiffe_id = path_or_id if path_or_id.startswith("spiffe://") else self.spiffe_id(path_or_id)
        entry = self.server.create_entry(
            spiffe_id,
            parent_id or self.node_id,
            list(selectors) if selectors is not None else [self.selector],
            hint=hint,
            x509_svid_ttl=self.svid_ttl if x509_svid_ttl is None else x509_svid_ttl,
            jwt_svid_ttl=self.jwt_svid_ttl if jwt_svid_ttl is None else jwt_svid_ttl,
            federates_with=federates_with,
            dns_names=dns_names,
        )
        self.entries.append(entry)
        return entry

    def delete_entry(self, entry: Entry | str) -> None:
        entry_id = entry.entry_id if isinstance(entry, Entry) else entry
        self.server.delete_entry(entry_id)
        self.entries = [e for e in self.entries if e.entry_id != entry_id]

    # -- agent control ---------------------------------------------------------

    def kill_agent(self, sig: int = signal.SIGKILL) -> None:
        self.agent.kill(sig)

    def start_agent(self, wait_svids: bool = True, timeout: float = 60.0) -> None:
        self.agent.start()
        if wait_svids:
            self.wait_for_svids(timeout=timeout)

    def restart_agent(
        self, sig: int = signal.SIGTERM, wait_svids: bool = True, timeout: float = 60.0
    ) -> None:
        if sig == signal.SIGTERM:
            self.agent.stop()
        else:
            self.agent.kill(sig)
        self.start_agent(wait_svids=wait_svids, timeout=timeout)

    def ensure_agent_running(self, timeout: float = 60.0) -> None:
        if not self.agent.running:
            self.start_agent(timeout=timeout)

    # -- readiness ----------------------------------------------------------------

    def fetch_x509(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.agent.fetch_x509(timeout=timeout)

    def wait_for_svids(
        self,
        spiffe_ids: Iterable[str] | None = None,
        timeout: float = 30.0,
        exact: bool = True,
    ) -> dict[str, Any]:
        """Wait until the Workload API serves exactly (or, ``exact=False``, at least)
        ``spiffe_ids`` (default: all registered entries). Returns that response."""
        want = set(spiffe_ids) if spiffe_ids is not None else self.expected_spiffe_ids
        seen: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            if self.agent.process is not None:
                self.agent.process.check_alive()
            resp = self.agent.fetch_x509()
            seen["last"] = resp
            got = {s.get("spiffe_id") for s in resp.get("svids") or []}
            return resp if (got == want if exact else want <= got) else None

        def diagnose() -> str:
            got = sorted(s.get("spiffe_id") for s in (seen.get("last") or {}).get("svids") or [])
            return f"want {sorted(want)}, got {got}\n{self.agent.log_tail()}"

        resp: dict[str, Any] = wait_until(
            check, timeout, interval=0.25, what="Workload API SVIDs", on_timeout=diagnose
        )
        return resp

    def describe(self) -> str:
        return (
            f"SPIRE {self.trust_domain}: server 127.0.0.1:{self.server.port} "
            f"(api {self.server.socket_path}), agent socket {self.socket_path}, "
            f"logs in {self.base_dir}"
        )
