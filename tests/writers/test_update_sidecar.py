"""The sidecar runs reload_* after an output's files are written: config keys and a real HAProxy.

The daemon runs in-process against the dev agent; HAProxy is started after the
first write (so the first update fails and shows in the status), then a rotation
reaches HAProxy through the runtime API with no reload.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from _support.ci import require_binary
from _support.daemon import in_process
from _support.wait import wait_until
from cryptography import x509
from writers_pki import Pki, client_context, free_port, https_get, wait_for_port

from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.sidecar import hot_updater, plan
from spiffe_bridge.sidecar.config import Config, build, parse_text
from spiffe_bridge.sidecar.schema import ConfigError

pytestmark = pytest.mark.consumers
DEADLINE = 30.0

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


def config_for(text: str, address: str = "unix:///tmp/none.sock") -> Config:
    return build(parse_text(f'agent_address = "{address}"\n{text}', "hcl"), environ={})


def test_reload_haproxy_after_each_write(
    dev_agent: DevAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = require_binary("haproxy")
    monkeypatch.setattr(hot_updater, "RETRY_FIRST", 0.5)
    certs, admin, port = tmp_path / "certs", tmp_path / "admin.sock", free_port()
    text = (
        f'outputs = [{{format = "combined", dir = "{certs}", reload_haproxy = "unix://{admin}",\n'
        "  reload_timeout = 2, reload_attempts = 2}]\n"
    )
    with in_process(config_for(text, dev_agent.address)) as daemon:
        label = f"reload_haproxy unix://{admin}"
        # HAProxy is not up yet: the first update fails, is retried, then shows in the status
        entry = wait_until(
            lambda: daemon.status.snapshot()["hot_updates"].get(label), "the first update", DEADLINE
        )
        wait_until(
            lambda: daemon.status.snapshot()["hot_updates"][label]["failures"] == 1,
            "a recorded failure",
            DEADLINE,
        )
        assert entry["action"] == "reload_haproxy"
        assert "admin.sock" in daemon.status.snapshot()["hot_updates"][label]["last_error"]

        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(admin=admin, port=port, certs=certs))
        proc = subprocess.Popen(
            [binary, "-db", "-f", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(port, proc)
            cert, key = Pki(dev_agent.ca).client_files(tmp_path / "client")
            context = client_context(certs / "svid_bundle.pem", cert, key)
            context.check_hostname = False  # the dev agent's SVID has no DNS name; the chain is verified
            # the failed first push is tried again without a new rotation, and now succeeds
            wait_until(
                lambda: daemon.status.snapshot()["hot_updates"][label]["last_error"] is None,
                "a retry",
                DEADLINE,
            )
            rotated = dev_agent.rotate()[0].serial_number

            def served() -> bool:
                _, leaf = https_get(port, context)
                return x509.load_der_x509_certificate(leaf).serial_number == rotated

            wait_until(served, "HAProxy to serve the rotated SVID", DEADLINE)
            snap = daemon.status.snapshot()["hot_updates"][label]
            # one or more failures before HAProxy came up, then the retry and the rotation succeeded
            assert snap["failures"] >= 1 and snap["last_error"] is None
            assert snap["runs"] >= snap["failures"] + 2
            assert proc.poll() is None  # the same process: updated, not reloaded
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ('format = "pem", dir = "/x", reload_haproxy = "unix:///a.sock"', 'needs format = "combined"'),
        ('format = "combined", dir = "/x", reload_haproxy = "http://x"', "'reload_haproxy' (line 2): not a"),
        ('format = "pem", dir = "/x", haproxy_cert_path = "/c.pem"', "'haproxy_cert_path' (line 2) needs"),
        ('format = "der", dir = "/x", haproxy_update_ca_file = false', 'needs format = "combined"'),
        ('format = "combined", dir = "/x", haproxy_cert_path = "/c.pem"', "(line 2) needs one of reload_"),
        ('format = "pem", dir = "/x", reload_mysql = "mysql://h/"', "'reload_mysql' (line 2)"),
        ('format = "pem", dir = "/x", reload_postgres = 5', "'reload_postgres' (line 2) must be a str"),
        ('format = "pem", dir = "/x", reload_postgres = "host=/s", reload_attempts = 0', "attempts >= 1"),
    ],
)  # fmt: skip
def test_bad_update_keys_name_the_key_and_line(entry: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        plan.build(config_for(f"outputs = [{{{entry}}}]"), {})
    assert fragment in str(info.value)


def test_update_keys_reach_the_plan() -> None:
    text = (
        'outputs = [{format = "combined", dir = "/srv/tls", reload_haproxy = "tcp://127.0.0.1:9999",\n'
        '  haproxy_cert_path = "/etc/haproxy/site.pem", haproxy_update_ca_file = false},\n'
        '  {format = "pem", dir = "/srv/pg", reload_postgres = "host=/run/pg user=postgres password=x"}]'
    )
    plans, _ = plan.build(config_for(text), {})
    (ha,) = plans[0].updates
    assert (ha.haproxy_cert_path, ha.cert_file, ha.ca_file) == (
        "/etc/haproxy/site.pem",
        "svid_combined.pem",
        "",
    )
    (pg,) = plans[1].updates
    assert pg.label == "reload_postgres host=/run/pg user=postgres password=***"
    assert pg.policy.timeout == 10 and pg.policy.attempts == 3
