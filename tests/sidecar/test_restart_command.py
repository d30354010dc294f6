"""An output's ``restart_command``: run once per change of the output's files, never for their creation.

The daemon runs in-process against the dev agent with one ``linkerd`` output (the
case the key exists for: linkerd2-proxy reads its trust anchors only at start).
Writes are counted through the status, so "nothing ran" is checked after the
daemon provably handled the update, not after a sleep.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from _support.daemon import in_process
from _support.wait import wait_until

from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.sidecar import hot_updater, plan
from spiffe_bridge.sidecar.config import Config, build, parse_text
from spiffe_bridge.sidecar.runner import Daemon
from spiffe_bridge.sidecar.schema import ConfigError

DEADLINE = 30.0


def config_for(address: str, out: Path, **extra: Any) -> Config:
    output = {"format": "linkerd", "dir": str(out), "linkerd_server_name": "vm.example", **extra}
    text = json.dumps({"agent_address": address, "outputs": [output]})
    return build(parse_text(text, "json"), environ={})


def recorder(marker: Path) -> list[str]:
    return [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('restart\\n')", str(marker)]


def writes(daemon: Daemon, out: Path) -> int:
    """How many times the daemon wrote (or found current) the output: one per update it handled."""
    with daemon.status._lock:
        return int(daemon.status.output_stats.get(str(out), {}).get("writes", 0))


def hot(daemon: Daemon, argv: list[str]) -> dict[str, Any]:
    """The status entry of the restart_command ``argv``."""
    label = f"restart_command {shlex.join(argv)}"
    entry: dict[str, Any] = daemon.status.snapshot()["hot_updates"].get(label, {})
    return entry


def restarts(marker: Path) -> int:
    return marker.read_text().count("restart\n") if marker.exists() else 0


def test_restart_command_is_an_output_key() -> None:
    config = config_for(
        "unix:///tmp/none.sock", Path("/tmp/o"), restart_command=["systemctl", "try-restart", "p"]
    )
    (only,) = plan.build(config, {})[0]
    (update,) = only.updates
    assert (update.action, update.argv, update.policy.timeout) == (
        "restart_command",
        ("systemctl", "try-restart", "p"),
        120.0,
    )
    assert update.label == "restart_command systemctl try-restart p"
    timed = config_for("unix:///tmp/none.sock", Path("/tmp/o"), restart_command=["x"], restart_timeout="5s")
    assert plan.build(timed, {})[0][0].updates[0].policy.timeout == 5.0
    unbounded = config_for("unix:///tmp/none.sock", Path("/tmp/o"), restart_command=["x"], restart_timeout=0)
    assert plan.build(unbounded, {})[0][0].updates[0].policy.timeout == 600.0  # never unbounded


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"restart_timeout": "5s"}, "'restart_timeout' (line 1) needs restart_command"),
        ({"restart_command": "systemctl try-restart p"}, "must be a non-empty list of strings"),
        ({"restart_command": []}, "must be a non-empty list of strings"),
        ({"restart_command": ["x"], "restart_timeout": "soon"}, "must be a duration"),
    ],
)
def test_restart_command_misconfigured(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        plan.build(config_for("unix:///tmp/none.sock", Path("/tmp/o"), **extra), {})


def test_restart_once_per_anchors_change_not_on_creation_or_rotation(
    dev_agent: DevAgent, tmp_path: Path
) -> None:
    out, marker = tmp_path / "identity", tmp_path / "restarts"
    with in_process(config_for(dev_agent.address, out, restart_command=recorder(marker))) as daemon:
        wait_until(
            lambda: writes(daemon, out) == 1 and (out / "linkerd.env").exists(), "the first write", DEADLINE
        )
        first = (out / "linkerd.env").read_bytes()

        dev_agent.rotate()  # a new SVID under the same root: the env file stays as it is
        wait_until(lambda: writes(daemon, out) == 2, "the rotation handled", DEADLINE)
        assert (out / "linkerd.env").read_bytes() == first
        daemon.outputs.hot.wait_idle(DEADLINE)
        assert restarts(marker) == 0  # neither the creation nor the rotation restarted

        dev_agent.rotate_x509_bundle(keep_previous=True)  # a new root beside the old: change 1
        wait_until(lambda: restarts(marker) == 1, "the restart after the new anchors", DEADLINE)
        assert (out / "linkerd.env").read_bytes() != first

        dev_agent.drop_previous_x509_authorities()  # the old root gone: change 2
        wait_until(lambda: restarts(marker) == 2, "the restart after the old anchors left", DEADLINE)
        daemon.outputs.hot.wait_idle(DEADLINE)
        entry = hot(daemon, recorder(marker))
        assert (entry["runs"], entry["failures"]) == (2, 0)
    assert restarts(marker) == 2


def test_a_new_run_restarts_when_the_files_it_finds_differ(dev_agent: DevAgent, tmp_path: Path) -> None:
    """The sidecar restarted while the consumer kept running with files that are now stale."""
    out, marker = tmp_path / "identity", tmp_path / "restarts"
    config = config_for(dev_agent.address, out, restart_command=recorder(marker))
    with in_process(config) as daemon:
        wait_until(lambda: writes(daemon, out) == 1, "the first write", DEADLINE)
    with in_process(config) as daemon:  # same anchors: nothing written, nothing restarted
        wait_until(lambda: writes(daemon, out) == 1, "the first write of the second run", DEADLINE)
        daemon.outputs.hot.wait_idle(DEADLINE)
    assert restarts(marker) == 0
    dev_agent.rotate_x509_bundle()  # while no sidecar runs
    with in_process(config) as daemon:
        wait_until(lambda: restarts(marker) == 1, "the restart for the stale files", DEADLINE)


def test_a_failing_restart_is_counted_and_logged(
    dev_agent: DevAgent, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hot_updater, "RETRY_FIRST", 3600.0)  # one run is what this test looks at
    out = tmp_path / "identity"
    command = [sys.executable, "-c", "import sys; sys.stderr.write('unit not found'); sys.exit(5)"]
    config = config_for(dev_agent.address, out, restart_command=command)
    with in_process(config) as daemon:
        wait_until(lambda: writes(daemon, out) == 1, "the first write", DEADLINE)
        dev_agent.rotate_x509_bundle(keep_previous=True)
        wait_until(lambda: hot(daemon, command).get("failures") == 1, "the failure", DEADLINE)
        assert "exited with code 5" in hot(daemon, command)["last_error"]
    record = next(r for r in caplog.records if r.getMessage().startswith("restart command "))
    assert "exited with code 5" in record.getMessage() and getattr(record, "stderr", "") == "unit not found"
