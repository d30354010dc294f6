"""examples/linkerd-vm end to end: real SPIRE, our relay and linkerd-env, the real linkerd2-proxy.

One mesh (module fixture) serves every check, in this order:

* SPIRE server (trust domain root.linkerd.cluster.local, ``UpstreamAuthority "disk"`` = a
  Linkerd-style trust anchor) and agent (unix attestor); entries for the proxy's ID and for
  another workload, both for this uid, a 16 s X.509-SVID TTL (a rotation every ~8 s);
* ``spiffe-bridge relay`` with the flags of systemd/spiffe-relay.service (allow-list: the
  proxy's ID), paths moved to the test's directories;
* ``spiffe-bridge linkerd-env --watch`` with the flags of systemd/linkerd-identity.service,
  whose ``--restart-command`` asks :class:`linkerd_mesh.ProxySupervisor` to restart the proxy;
* linkerd2-proxy with linkerd.env + proxy/mesh.env, as linkerd-proxy.service runs it.

What it proves and what it does not: docs/interop.md, section "Linkerd proxy".
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from interop_support import der_of, short_socket_dir, spiffe_id_of, use_disk_upstream, wait_for
from linkerd_mesh import (
    OTHER_ID,
    PROXY_ID,
    SERVER_NAME,
    TRUST_DOMAIN,
    ProxySupervisor,
    TrustAnchor,
    drop_option,
    http_get,
    parse_metrics,
    read_env_file,
    replace_option,
    unit_exec_start,
)
from spire import EntrySpec, SpireDeployment, _Process, free_port

from spiffe_bridge import WorkloadClient, X509Context, X509Source

pytest_plugins = ("interop_support",)

#: Short enough that the agent rotates the proxy's SVID every few seconds (at half its life).
SVID_TTL = 16
#: Deadline for anything that waits for a rotation.
ROTATION_DEADLINE = 3.0 * SVID_TTL
#: Deadline for a process start on a busy machine.
START_DEADLINE = 60.0
X509_METHOD = "FetchX509SVID"


@dataclass
class Mesh:
    spire: SpireDeployment
    anchor: TrustAnchor
    anchor_cert: Path
    anchor_key: Path
    relay: _Process
    relay_socket: Path
    relay_health_port: int
    linkerd_env: _Process
    env_file: Path
    proxy: ProxySupervisor
    #: SPIFFE IDs of every X.509 context a client of the relay socket received, in order.
    relay_views: list[set[str]] = field(default_factory=list)

    @property
    def relay_address(self) -> str:
        return f"unix://{self.relay_socket}"

    def relay_ready(self) -> bool:
        self.relay.check_alive()
        return http_get(f"http://127.0.0.1:{self.relay_health_port}/ready")[0] == 200

    def relay_open_x509_streams(self) -> int:
        code, body = http_get(f"http://127.0.0.1:{self.relay_health_port}/metrics")
        assert code == 200, f"relay /metrics answered {code}"
        return int(
            sum(
                v
                for k, v in parse_metrics(body).items()
                if k.startswith("spiffe_bridge_relay_open_streams{") and f'method="{X509_METHOD}"' in k
            )
        )

    def current_leaf(self) -> x509.Certificate:
        """The proxy's SVID leaf as the relay serves it now."""
        with WorkloadClient(self.relay_address, timeout=15) as client:
            ctx = client.fetch_x509_context()
        return ctx.svid(spiffe_id=PROXY_ID).leaf

    def presents_current_svid(self, roots_pem: bytes) -> x509.Certificate | None:
        """The leaf the proxy presents, if it is the SVID the relay serves now (and verifies)."""
        presented = self.proxy.presented_leaf(roots_pem)
        return presented if der_of(presented) == der_of(self.current_leaf()) else None

    def env_restarts(self) -> int:
        """How often linkerd-env's restart_command (the supervisor's client) succeeded, from its log."""
        return self.linkerd_env.log_path.read_text().count(f"restart command {sys.executable} succeeded")

    def certified(self) -> bool:
        """The running proxy logged "Certified identity" for the proxy's ID and answers /ready 200."""
        line = re.search(r"Certified identity.*", self.proxy.current_run_log())
        return bool(line and PROXY_ID in line.group(0)) and self.proxy.ready()


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SPIFFE_")}


@pytest.fixture(scope="module")
def mesh(
    spire_bin_dir: Path, linkerd_proxy_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("linkerd-vm")
    socks = short_socket_dir("sbl-")
    anchor = TrustAnchor()
    anchor_cert, anchor_key = base / "ca.crt", base / "ca.key"
    anchor.install(anchor_cert, anchor_key)
    spire = SpireDeployment(
        spire_bin_dir,
        base / "spire",
        trust_domain=TRUST_DOMAIN,
        federated_trust_domain=None,
        entries=(EntrySpec("/external-workload"), EntrySpec("/other-app")),
        svid_ttl=SVID_TTL,
    )
    use_disk_upstream(spire, anchor_cert, anchor_key)
    stack: list[_Process | ProxySupervisor | X509Source] = []
    try:
        spire.start()
        relay_socket = socks / "proxy.sock"
        health_port = free_port()
        relay_argv = unit_exec_start(
            "spiffe-relay.service",
            {
                "unix:///run/spire/agent/public/api.sock": f"unix://{spire.socket_path}",
                "/run/spiffe-relay/": f"{socks}/",
            },
        )
        # --socket-owner needs the example's users; the test runs as one user
        relay_argv = [*drop_option(relay_argv, "--socket-owner"), "--health-addr", str(health_port)]
        relay = _Process("spiffe-bridge relay", relay_argv, base / "relay.log", base, env=_child_env())
        env_dir = base / "linkerd-identity"
        env_argv = unit_exec_start(
            "linkerd-identity.service",
            {"/run/spiffe-relay/": f"{socks}/", "/run/linkerd-identity": str(env_dir)},
        )
        proxy = ProxySupervisor(linkerd_proxy_bin, env_dir / "linkerd.env", base, socks / "supervisor.sock")
        env_argv = replace_option(env_argv, "--restart-command", proxy.restart_command)
        linkerd_env = _Process("linkerd-env", env_argv, base / "linkerd-env.log", base, env=_child_env())
        m = Mesh(
            spire, anchor, anchor_cert, anchor_key, relay, relay_socket, health_port, linkerd_env,
            env_dir / "linkerd.env", proxy,
        )  # fmt: skip

        relay.start()
        stack.append(relay)
        wait_for(m.relay_ready, "relay ready", START_DEADLINE)
        recorder = X509Source(m.relay_address, timeout=30)
        stack.append(recorder)
        recorder.subscribe(lambda ctx: m.relay_views.append({str(s.spiffe_id) for s in ctx.svids}))
        linkerd_env.start()
        stack.append(linkerd_env)
        wait_for(lambda: linkerd_env.check_alive() or m.env_file.exists(), "linkerd.env", START_DEADLINE)
        proxy.serve_restarts()
        proxy.start()
        stack.append(proxy)
        yield m
    finally:
        for item in reversed(stack):
            if isinstance(item, (X509Source, ProxySupervisor)):
                item.close()
            else:
                item.stop()
        spire.stop()
        shutil.rmtree(socks, ignore_errors=True)


def anchors_in_env(m: Mesh) -> list[bytes]:
    pem = read_env_file(m.env_file)["LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"].encode()
    return [der_of(c) for c in x509.load_pem_x509_certificates(pem)]


def test_proxy_certifies_with_the_environment_linkerd_env_rendered(mesh: Mesh) -> None:
    env = read_env_file(mesh.env_file)
    assert env["LINKERD2_PROXY_IDENTITY_SERVER_ID"] == PROXY_ID
    assert env["LINKERD2_PROXY_IDENTITY_SERVER_NAME"] == SERVER_NAME
    assert env["LINKERD2_PROXY_IDENTITY_SPIRE_WORKLOAD_API_ADDRESS"] == mesh.relay_address
    assert anchors_in_env(mesh) == [der_of(mesh.anchor.cert)]  # the Linkerd anchor, and only it
    running = mesh.proxy.environ()
    assert {k: v for k, v in running.items() if k.startswith("LINKERD2_PROXY_IDENTITY_")} == {
        k: v for k, v in env.items() if k.startswith("LINKERD2_PROXY_IDENTITY_")
    }  # the proxy runs with exactly the identity env linkerd-env rendered

    wait_for(mesh.certified, "proxy certified (/ready 200, 'Certified identity')", START_DEADLINE)
    assert mesh.proxy.refreshes("ok") >= 1
    assert mesh.proxy.refreshes("error") == 0
    assert (mesh.proxy.starts, mesh.env_restarts()) == (1, 0)


def test_proxy_follows_svid_rotations(mesh: Mesh) -> None:
    wait_for(mesh.certified, "proxy certified", START_DEADLINE)
    pid = mesh.proxy.pid
    ok = mesh.proxy.refreshes("ok")
    expiry_key = "control_identity_cert_expiration_timestamp_seconds"
    expiry = mesh.proxy.metrics()[expiry_key]
    wait_for(
        lambda: mesh.proxy.refreshes("ok") >= ok + 2, "two SVID rotations at the proxy", 2 * ROTATION_DEADLINE
    )
    assert mesh.proxy.metrics()[expiry_key] > expiry  # the proxy now holds a later-expiring SVID
    assert mesh.proxy.refreshes("error") == 0
    assert mesh.proxy.pid == pid and mesh.proxy.ready()
    assert mesh.env_restarts() == 0  # a rotation changes nothing in linkerd.env


def test_proxy_presents_the_current_svid_over_tls(mesh: Mesh) -> None:
    wait_for(mesh.certified, "proxy certified", START_DEADLINE)
    first = wait_for(lambda: mesh.presents_current_svid(mesh.anchor.pem), "proxy presents the relay's SVID")
    assert spiffe_id_of(first) == PROXY_ID
    # after the next rotation it presents the new SVID, not the one it started with
    wait_for(
        lambda: mesh.current_leaf().serial_number != first.serial_number, "a rotation", ROTATION_DEADLINE
    )
    second = wait_for(lambda: mesh.presents_current_svid(mesh.anchor.pem), "proxy presents the rotated SVID")
    assert second.serial_number != first.serial_number and spiffe_id_of(second) == PROXY_ID


def _recovers_without_restart(mesh: Mesh, what: str, ok_before: int, pid: int | None) -> None:
    wait_for(lambda: mesh.proxy.refreshes("ok") > ok_before, f"a new certificate at the proxy after {what}",
             ROTATION_DEADLINE)  # fmt: skip
    wait_for(lambda: mesh.presents_current_svid(mesh.anchor.pem), f"current SVID presented after {what}",
             ROTATION_DEADLINE)  # fmt: skip
    assert mesh.proxy.ready()
    assert mesh.proxy.pid == pid and mesh.proxy.starts == 1, f"the proxy was restarted for {what}"
    assert mesh.env_restarts() == 0


def test_proxy_recovers_from_a_spire_agent_restart_without_a_restart(mesh: Mesh) -> None:
    wait_for(mesh.certified, "proxy certified", START_DEADLINE)
    pid, ok = mesh.proxy.pid, mesh.proxy.refreshes("ok")
    before = mesh.current_leaf().serial_number
    log_mark = len(mesh.proxy.log())
    mesh.spire.restart_agent()
    # the restarted agent mints new SVIDs; the relay carries them to the proxy's open stream
    wait_for(lambda: mesh.current_leaf().serial_number != before, "a post-restart SVID", ROTATION_DEADLINE)
    _recovers_without_restart(mesh, "the agent restart", ok, pid)
    # the relay held the proxy's stream open through the restart (--hold): the proxy never retried
    assert "Unexpected SPIRE Workload API response" not in mesh.proxy.log()[log_mark:]


def test_proxy_recovers_from_a_relay_restart_without_a_restart(mesh: Mesh) -> None:
    wait_for(mesh.certified, "proxy certified", START_DEADLINE)
    pid = mesh.proxy.pid
    streams = wait_for(mesh.relay_open_x509_streams, "streams on the relay")
    mesh.relay.stop()
    ok = mesh.proxy.refreshes("ok")
    mesh.relay.start()
    wait_for(mesh.relay_ready, "relay ready again", START_DEADLINE)
    # the proxy (and linkerd-env, and the recorder) reconnected on their own
    wait_for(
        lambda: mesh.relay_open_x509_streams() == streams, f"{streams} streams reconnected", ROTATION_DEADLINE
    )
    _recovers_without_restart(mesh, "the relay restart", ok, pid)


def test_trust_anchor_rotation_restarts_the_proxy_once_and_it_certifies_under_the_new_anchors(
    mesh: Mesh,
) -> None:
    wait_for(mesh.certified, "proxy certified", START_DEADLINE)
    assert (mesh.proxy.restarts, mesh.env_restarts()) == (0, 0)
    old, new = mesh.anchor, TrustAnchor()
    # Linkerd's rotation: the new anchor joins the bundle first, issuing under it comes second.
    new.install(mesh.anchor_cert, mesh.anchor_key)
    prepared = mesh.spire.server.cli_json("localauthority", "x509", "prepare")
    authority_id = prepared["prepared_authority"]["authority_id"]
    both = [der_of(old.cert), der_of(new.cert)]
    wait_for(
        lambda: sorted(anchors_in_env(mesh)) == sorted(both), "both anchors in linkerd.env", ROTATION_DEADLINE
    )
    wait_for(lambda: mesh.proxy.restarts == 1 and mesh.env_restarts() == 1, "linkerd-env restarted the proxy")
    wait_for(mesh.certified, "restarted proxy certified", START_DEADLINE)
    running = mesh.proxy.environ()["LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"].encode()
    assert sorted(der_of(c) for c in x509.load_pem_x509_certificates(running)) == sorted(both)

    mesh.spire.server.cli("localauthority", "x509", "activate", "-authorityID", authority_id)
    # SVIDs now chain to the new anchor; the proxy certifies them (handshakes verified by the new one only)
    leaf = wait_for(lambda: mesh.presents_current_svid(new.pem), "an SVID under the new anchor presented",
                    2 * ROTATION_DEADLINE)  # fmt: skip
    assert spiffe_id_of(leaf) == PROXY_ID
    assert mesh.proxy.refreshes("error") == 0 and mesh.proxy.ready()
    # exactly once: one bundle change, one restart, two proxy starts in all
    assert (mesh.proxy.restarts, mesh.env_restarts(), mesh.proxy.starts) == (1, 1, 2)
    mesh.anchor = new


def test_relay_shows_the_proxy_only_its_own_svid(mesh: Mesh) -> None:
    wait_for(mesh.certified, "proxy certified", START_DEADLINE)
    direct = {s["spiffe_id"] for s in mesh.spire.fetch_x509()["svids"]}
    assert direct == {PROXY_ID, OTHER_ID}  # the agent serves the relay's uid both identities
    with WorkloadClient(mesh.relay_address, timeout=15) as client:
        ctx: X509Context = client.fetch_x509_context()
    assert [str(s.spiffe_id) for s in ctx.svids] == [PROXY_ID]
    # every update a relay client got, across rotations and restarts, held the proxy's SVID only
    wait_for(lambda: len(mesh.relay_views) >= 2, "a rotation seen by the relay's client", ROTATION_DEADLINE)
    assert all(view == {PROXY_ID} for view in mesh.relay_views), mesh.relay_views
    assert "no matching SVID" not in mesh.proxy.log()
