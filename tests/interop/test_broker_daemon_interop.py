"""``spiffe-bridge run`` in daemon mode as a node broker, against a real SPIRE 1.15.3 agent (#21).

One daemon keeps four outputs: two workloads (``sleep`` processes under other uids,
one referenced by a pid file, one by a fixed PID), a workload without a registration
entry, and the bridge's own SVID. Each workload's files carry that workload's identity
and belong to its uid; the daemon follows a rotation and a replaced process, and the
workload without an entry is the only output that is not ready.
"""

from __future__ import annotations

import socket
import stat
from pathlib import Path
from typing import Any

from broker_support import BROKER_PATH, NOT_A_BROKER_PATH, broker_spire, workload
from cryptography import x509
from interop_support import Health, sidecar, spiffe_id_of, wait_for
from spire import SpireDeployment

from spiffe_bridge.client.sync import WorkloadClient
from spiffe_bridge.jwtsvid import JwtSvid

__all__ = ["broker_spire"]  # the module-scoped deployment fixture

#: The rotating workload's X.509-SVID TTL: the agent renews it after about half of it.
ROTATING_TTL = 20
DEADLINE = 30.0


def _cert(directory: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates((directory / "svid.pem").read_bytes())[0]


def _holds(directory: Path, spiffe_id: str) -> x509.Certificate | None:
    cert = _cert(directory)
    return cert if spiffe_id_of(cert) == spiffe_id else None


def _outputs(health: Health) -> dict[str, Any]:
    return dict(health.body().get("outputs", {}))


def _broker_conf(d: SpireDeployment, health: Health, extra: str = "") -> str:
    """The daemon's configuration up to its ``outputs``: agent, broker block, health server."""
    return f"""agent_address = "{d.workload_api_address}"
{extra}broker {{
  address = "{d.broker_address}"
  spiffe_id = "{d.spiffe_id(BROKER_PATH)}"
}}
{health.hcl}
"""


def test_daemon_follows_each_workload(broker_spire: SpireDeployment, tmp_path: Path) -> None:
    d = broker_spire
    # nginx: uid 1021, group 1021; its replacement runs in group 1023 and so is another entry
    web = d.create_entry(
        "/wl/d-nginx", selectors=["unix:uid:1021", "unix:gid:1021"], x509_svid_ttl=ROTATING_TTL
    )
    web_new = d.create_entry("/wl/d-nginx-new", selectors=["unix:uid:1021", "unix:gid:1023"])
    db = d.create_entry("/wl/d-postgres", selectors=["unix:uid:1022"])
    health = Health()
    dirs = {name: tmp_path / name for name in ("nginx", "pg", "none", "own")}
    pid_file = tmp_path / "nginx.pid"
    try:
        with workload(1021) as nginx, workload(1022) as pg, workload(1024) as unknown:
            pid_file.write_text(f"{nginx.pid}\n")
            conf = tmp_path / "broker.conf"
            conf.write_text(
                _broker_conf(d, health)
                + f"""outputs = [
  {{ format = "pem", dir = "{dirs["nginx"]}", workload_pid_file = "{pid_file}", uid = 1021, gid = 1021 }},
  {{ format = "pem", dir = "{dirs["pg"]}", workload_pid = {pg.pid}, uid = 1022, gid = 1022 }},
  {{ format = "pem", dir = "{dirs["none"]}", workload_pid = {unknown.pid} }},
  {{ format = "pem", dir = "{dirs["own"]}" }},
]
"""
            )
            notify_path = str(tmp_path / "notify")
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
                systemd.bind(notify_path)
                systemd.settimeout(DEADLINE)
                with sidecar(["-config", str(conf)], tmp_path, env={"NOTIFY_SOCKET": notify_path}) as proc:
                    # READY=1 once the own output and every workload output has a verdict, not
                    # waiting for the workload without an entry
                    assert systemd.recv(64) == b"READY=1", proc.log
                    assert spiffe_id_of(_cert(dirs["own"])) in {
                        d.spiffe_id(BROKER_PATH),
                        d.spiffe_id(NOT_A_BROKER_PATH),
                    }
                    first = wait_for(lambda: _holds(dirs["nginx"], web.spiffe_id), "nginx's SVID", DEADLINE)
                    wait_for(lambda: _holds(dirs["pg"], db.spiffe_id), "postgres's SVID", DEADLINE)
                    for name, uid in (("nginx", 1021), ("pg", 1022)):
                        for file in ("svid.pem", "svid_key.pem", "svid_bundle.pem"):
                            st = (dirs[name] / file).stat()
                            assert (st.st_uid, st.st_gid) == (uid, uid), (name, file)
                        assert stat.S_IMODE((dirs[name] / "svid_key.pem").stat().st_mode) == 0o600
                    assert not (dirs["none"] / "svid.pem").exists()

                    # readiness: the one output without an identity says so; the others are written
                    def only_none_unready() -> dict[str, Any] | None:
                        outs = _outputs(health)
                        ok = all(outs.get(str(dirs[n])) == "written" for n in ("nginx", "pg", "own"))
                        return outs if ok and str(outs.get(str(dirs["none"]), "")).startswith(
                            "not ready: NoIdentity"
                        ) else None  # fmt: skip

                    outs = wait_for(only_none_unready, "per-output readiness", DEADLINE)
                    assert f"pid {unknown.pid}" in outs[str(dirs["none"])]
                    code, body = health.get("/ready")
                    assert code == 503 and body["health"]["ready"] is False, body
                    assert health.get("/live")[0] == 200

                    # rotation: the agent renews nginx's short-lived SVID; the daemon writes it
                    rotated = wait_for(
                        lambda: (
                            (c := _holds(dirs["nginx"], web.spiffe_id))
                            and c.serial_number != first.serial_number
                            and c
                        ),
                        "nginx's rotated SVID",
                        ROTATING_TTL + DEADLINE,
                    )
                    assert rotated.not_valid_after_utc > first.not_valid_after_utc

                    # the process exits (the file still names it): that output alone is not ready
                    nginx.stop()
                    wait_for(
                        lambda: str(_outputs(health).get(str(dirs["nginx"]), "")).startswith(
                            "not ready: process exited"
                        ),
                        "nginx's output not ready after its process exited",
                        DEADLINE,
                    )
                    assert _outputs(health)[str(dirs["pg"])] == "written"
                    exited_at = len(proc.log)
                    # nginx is replaced: a new process (another entry), its PID in the pid file
                    with workload(1021, gid=1023) as replacement:
                        pid_file.write_text(f"{replacement.pid}\n")
                        wait_for(
                            lambda: _holds(dirs["nginx"], web_new.spiffe_id), "the new nginx's SVID", DEADLINE
                        )
                        wait_for(
                            lambda: _outputs(health).get(str(dirs["nginx"])) == "written",
                            "nginx's output ready again",
                            DEADLINE,
                        )
                        key = (dirs["nginx"] / "svid_key.pem").stat()
                        assert (key.st_uid, key.st_gid, stat.S_IMODE(key.st_mode)) == (1021, 1021, 0o600)
                        # the old process's identity was never written after it exited
                        after = proc.log[exited_at:]
                        assert f"for the workload (pid {nginx.pid})" not in after, after
                        assert f"for the workload (pid {replacement.pid})" in after, after
                        assert spiffe_id_of(_cert(dirs["nginx"])) == web_new.spiffe_id
                        proc.alive()
                    assert proc.stop() == 0, proc.log
    finally:
        for entry in (web, web_new, db):
            d.delete_entry(entry)


def test_the_bridge_losing_its_own_identity_deletes_only_its_own_files(
    broker_spire: SpireDeployment, tmp_path: Path
) -> None:
    """``on_identity_lost = "delete"`` is about the bridge's identity: a workload's files are the workload's.

    It used to delete every output, so the agent withdrawing the bridge's entries also took the
    SVIDs of workloads whose own entries stood.
    """
    d = broker_spire
    web = d.create_entry("/wl/lost-nginx", selectors=["unix:uid:1025"])
    own_ids = {d.spiffe_id(BROKER_PATH), d.spiffe_id(NOT_A_BROKER_PATH)}
    health = Health()
    dirs = {name: tmp_path / name for name in ("nginx", "own")}
    withdrawn: list[Any] = []
    try:
        with workload(1025) as nginx:
            conf = tmp_path / "broker.conf"
            conf.write_text(
                _broker_conf(d, health, 'on_identity_lost = "delete"\n')
                + f"""outputs = [
  {{ format = "pem", dir = "{dirs["nginx"]}", workload_pid = {nginx.pid} }},
  {{ format = "pem", dir = "{dirs["own"]}" }},
]
"""
            )
            with sidecar(["-config", str(conf)], tmp_path) as proc:
                wait_for(lambda: _holds(dirs["nginx"], web.spiffe_id), "nginx's SVID", DEADLINE)
                wait_for(lambda: (dirs["own"] / "svid.pem").exists(), "the bridge's own SVID", DEADLINE)
                held = (dirs["nginx"] / "svid.pem").read_bytes()

                for entry in [e for e in d.entries if e.spiffe_id in own_ids]:
                    d.delete_entry(entry)
                    withdrawn.append(entry)
                wait_for(
                    lambda: health.body().get("identity") == "lost", "the bridge's identity lost", DEADLINE
                )
                wait_for(lambda: not (dirs["own"] / "svid.pem").exists(), "own files deleted", DEADLINE)
                assert (dirs["nginx"] / "svid.pem").read_bytes() == held, proc.log
                assert spiffe_id_of(_cert(dirs["nginx"])) == web.spiffe_id
                assert "removed the bridge's own output files" in proc.log
                assert proc.stop() == 0, proc.log
    finally:
        d.delete_entry(web)
        for entry in withdrawn:  # the module's deployment gets its broker identities back
            d.create_entry(entry.spiffe_id, hint=entry.hint)
        if withdrawn:
            d.wait_for_svids()


#: The workload token's TTL: the daemon fetches a new one after half of it.
JWT_TTL = 20
AUDIENCE = "broker-jwt-test"


def _token(directory: Path, d: SpireDeployment) -> JwtSvid | None:
    """The token in ``directory`` once it is there, checked against the JWT bundle SPIRE serves."""
    path = directory / "api.token"
    if not path.exists():
        return None
    with WorkloadClient(d.workload_api_address) as client:
        return client.fetch_jwt_bundles().validate(path.read_text(encoding="ascii"), AUDIENCE)


def test_daemon_keeps_each_workloads_jwt_svids_fresh(broker_spire: SpireDeployment, tmp_path: Path) -> None:
    """``outputs[].jwt_svids``: the workload's own token, refreshed at half-life, stopped with the process."""
    d = broker_spire
    api = d.create_entry("/wl/j-api", selectors=["unix:uid:1031", "unix:gid:1031"], jwt_svid_ttl=JWT_TTL)
    api_new = d.create_entry(
        "/wl/j-api-new", selectors=["unix:uid:1031", "unix:gid:1033"], jwt_svid_ttl=JWT_TTL
    )
    health = Health()
    out = tmp_path / "api"
    pid_file = tmp_path / "api.pid"
    try:
        with workload(1031) as first:
            pid_file.write_text(f"{first.pid}\n")
            conf = tmp_path / "broker.conf"
            conf.write_text(
                _broker_conf(d, health)
                + f"""outputs = [
  {{ format = "pem", dir = "{out}", workload_pid_file = "{pid_file}", uid = 1031, gid = 1031,
     jwt_svids = [{{ jwt_audience = "{AUDIENCE}", jwt_extra_audiences = ["other"],
                    jwt_svid_file_name = "api.token" }}] }},
]
"""
            )
            notify_path = str(tmp_path / "notify")
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
                systemd.bind(notify_path)
                systemd.settimeout(DEADLINE)
                with sidecar(["-config", str(conf)], tmp_path, env={"NOTIFY_SOCKET": notify_path}) as proc:
                    assert systemd.recv(64) == b"READY=1", proc.log  # a first verdict (the entry may lag)
                    # "written" only once the X.509 files and the token are on disk
                    wait_for(
                        lambda: _outputs(health).get(str(out)) == "written", "the output written", DEADLINE
                    )
                    token = _token(out, d)
                    assert token is not None and str(token.spiffe_id) == api.spiffe_id  # sub: the workload's
                    assert set(token.audience) == {AUDIENCE, "other"}
                    assert token.expiry - (token.issued_at or 0) == JWT_TTL
                    assert _holds(out, api.spiffe_id)
                    st = (out / "api.token").stat()
                    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1031, 1031, 0o600)

                    # refreshed before it expires: a new token after about half its lifetime
                    def refreshed(old: JwtSvid) -> JwtSvid | None:
                        new = _token(out, d)
                        return new if new is not None and new.token != old.token else None

                    second = wait_for(lambda: refreshed(token), "a refreshed token", JWT_TTL)
                    assert str(second.spiffe_id) == api.spiffe_id
                    assert (second.issued_at or 0) < token.expiry

                    # the process exits: not ready, and its tokens are no longer refreshed or written
                    first.stop()
                    wait_for(
                        lambda: str(_outputs(health).get(str(out), "")).startswith(
                            "not ready: process exited"
                        ),
                        "the output not ready after its process exited",
                        DEADLINE,
                    )
                    exited_at = len(proc.log)
                    with workload(1031, gid=1033) as replacement:
                        pid_file.write_text(f"{replacement.pid}\n")
                        # a new process, new tokens (another entry: another sub), refreshed in turn
                        new = wait_for(
                            lambda: (t := _token(out, d)) and str(t.spiffe_id) == api_new.spiffe_id and t,
                            "the new process's token",
                            DEADLINE,
                        )
                        wait_for(lambda: refreshed(new), "the new process's refreshed token", JWT_TTL)
                        # by now the old process's refresher would have fetched again twice over
                        after = proc.log[exited_at:]
                        assert f"for the workload (pid {first.pid})" not in after, after
                        assert f"JWT-SVID api.token for the workload (pid {replacement.pid})" in after, after
                        assert _outputs(health)[str(out)] == "written"
                        proc.alive()
                    assert proc.stop() == 0, proc.log
    finally:
        for entry in (api, api_new):
            d.delete_entry(entry)
