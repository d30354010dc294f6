"""``spiffe-bridge run`` as a systemd Type=notify service: READY=1 once the files are on disk."""

from __future__ import annotations

import socket
from pathlib import Path

from sidecar_helpers import sidecar, write_conf

from spiffe_bridge.devagent.server import DevAgent


def test_ready_after_the_first_write_and_stopping_on_sigterm(dev_agent: DevAgent, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    conf = write_conf(
        tmp_path,
        f"""
        agent_address = "{dev_agent.address}"
        cert_dir = "{certs}"
        svid_file_name = "svid.pem"
        svid_key_file_name = "svid_key.pem"
        svid_bundle_file_name = "svid_bundle.pem"
        """,
    )
    notify_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(notify_path)
        systemd.settimeout(30)
        with sidecar(["-config", str(conf)], tmp_path, env={"NOTIFY_SOCKET": notify_path}) as proc:
            assert systemd.recv(64) == b"READY=1", proc.log
            assert {p.name for p in certs.iterdir()} >= {"svid.pem", "svid_key.pem", "svid_bundle.pem"}
            proc.signal(15)
            assert systemd.recv(64) == b"STOPPING=1"
            assert proc.wait() == 0
