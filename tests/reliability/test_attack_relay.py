"""Attack run (issue #14): a relay told to serve its own upstream, and log lines as long as an update."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _support.daemon import in_process
from _support.wait import wait_until

from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.loglist import capped
from spiffe_bridge.relay import Relay
from spiffe_bridge.relay.filter import SvidFilter
from spiffe_bridge.relay.listener import Listener
from spiffe_bridge.sidecar.config import build, parse_text

MANY = 60
CLI = [sys.executable, "-m", "spiffe_bridge", "relay"]
IDS = [f"spiffe://example.org/w{n}" for n in range(MANY)]


def test_the_relay_refuses_an_alias_of_its_own_upstream(tmp_short: str) -> None:
    upstream = f"{tmp_short}/self.sock"
    os.mkdir(f"{tmp_short}/sub")
    os.symlink(tmp_short, f"{tmp_short}/link")
    for alias in (f"{tmp_short}/sub/../self.sock", f"{tmp_short}/link/self.sock", f"{tmp_short}/./self.sock"):
        with pytest.raises(ValueError, match="its own upstream"):
            Relay("unix://" + upstream, "unix://" + alias)
    done = subprocess.run(
        [*CLI, "--upstream", "unix://" + upstream, "--listen", f"unix://{tmp_short}/link/self.sock"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "its own upstream" in done.stderr


def test_two_aliases_of_one_socket_are_one_socket_listed_twice(tmp_short: str) -> None:
    os.symlink(tmp_short, f"{tmp_short}/link")
    aliases = [Listener.of(f"unix://{tmp_short}/a.sock"), Listener.of(f"unix://{tmp_short}/link/a.sock")]
    with pytest.raises(ValueError, match="listed twice"):
        Relay("unix:///run/none.sock", aliases)


def test_capped_counts_what_it_leaves_out() -> None:
    assert capped([]) == ""
    assert capped(["a", "b"]) == "a, b"
    assert capped(str(n) for n in range(10)) == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9"
    assert capped(str(n) for n in range(5000)) == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9 … and 4,990 more"
    assert SvidFilter.of(IDS).describe().endswith(f"… and {MANY - 10} more")


@pytest.mark.dev_agent(identities=IDS)
def test_an_update_with_many_svids_logs_a_short_line(
    dev_agent: DevAgent, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The sidecar's and the dev agent's lines about an update name 10 SVIDs and count the rest."""
    caplog.set_level("INFO", logger="spiffe_bridge")
    text = f'agent_address = "{dev_agent.address}"\ncert_dir = "{tmp_path}"\nsvid_file_name = "svid.pem"\n'
    text += 'svid_key_file_name = "svid_key.pem"\nsvid_bundle_file_name = "svid_bundle.pem"\n'
    config = build(parse_text(text, "hcl"), environ={})
    with in_process(config) as daemon:
        wait_until(daemon.status.ready, "the sidecar's first write")
    lines = [r.getMessage() for r in caplog.records if "X.509 update for" in r.getMessage()]
    lines += [r.getMessage() for r in caplog.records if "pushed FetchX509SVID" in r.getMessage()]
    assert len(lines) >= 2, [r.getMessage() for r in caplog.records]
    for line in lines:
        assert f"… and {MANY - 10} more" in line and len(line) < 1200, line
