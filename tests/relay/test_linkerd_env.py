"""``spiffe-bridge linkerd-env``: the env file as bash/systemd read it, and one restart per anchors change.

``--watch`` runs the sidecar (one ``linkerd`` output with ``restart_command``); its
own tests are tests/sidecar/test_restart_command.py.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _support.ci import needs
from _support.pki import roots_pem
from relay_helpers import RelayFactory

from spiffe_bridge.devagent.server import DevAgent

PROXY = "spiffe://example.org/proxy"
APP = "spiffe://example.org/app"
BASH = "/bin/bash"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "spiffe_bridge", "linkerd-env", *args]


def _roots_pem(agent: DevAgent) -> str:
    return roots_pem(agent.ca).decode()


def _sourced(env_file: Path, name: str) -> str:
    """The value bash sees after ``set -a; . file`` (how a shell wrapper would load it)."""
    script = f'set -a; . "$1"; printf %s "${{{name}}}"'
    return subprocess.run(
        [BASH, "-c", script, "_", str(env_file)], capture_output=True, text=True, check=True
    ).stdout


@needs(os.path.exists(BASH), "needs bash")
@pytest.mark.dev_agent(identities=[f"{APP}#app", f"{PROXY}#proxy"])
def test_env_through_filtered_relay_reads_back_exactly(
    dev_agent: DevAgent, relay_factory: RelayFactory, tmp_path: Path
) -> None:
    relay = relay_factory(dev_agent.address, allow_ids=[PROXY])
    relay.wait_serving()
    done = subprocess.run(
        _cli("--address", relay.address, "--server-name", "proxy.vm.example"),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    env_file = tmp_path / "linkerd.env"
    env_file.write_text(done.stdout)
    assert _sourced(env_file, "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS") == _roots_pem(dev_agent)
    assert _sourced(env_file, "LINKERD2_PROXY_IDENTITY_SERVER_ID") == PROXY  # the only SVID it was shown
    assert _sourced(env_file, "LINKERD2_PROXY_IDENTITY_SERVER_NAME") == "proxy.vm.example"
    assert _sourced(env_file, "LINKERD2_PROXY_IDENTITY_SPIRE_WORKLOAD_API_ADDRESS") == relay.address


@needs(os.path.exists(BASH), "needs bash")
def test_watch_restarts_once_per_anchors_change(dev_agent: DevAgent, tmp_path: Path) -> None:
    """``--watch`` is the sidecar with one linkerd output: its log says what it wrote and restarted."""
    out_dir, marker = tmp_path / "identity", tmp_path / "restarts"
    restart = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('restart\\n')", str(marker)]
    args = ["--address", dev_agent.address, "--server-name", "vm.example", "--write", str(out_dir)]
    proc = subprocess.Popen(
        _cli(*args, "--watch", "--restart-command", shlex.join(restart), "--log-format", "json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wrote, restarted = f"wrote 2 files to {out_dir}", f"restart command {sys.executable} succeeded"

    def logged_until(message: str) -> list[str]:
        """The messages logged up to and including ``message``."""
        assert proc.stderr is not None
        seen: list[str] = []
        while not seen or seen[-1] != message:
            line = proc.stderr.readline()
            assert line, f"exited ({proc.wait()}) before logging {message!r}; logged {seen}"
            seen.append(json.loads(line)["message"] if line.startswith("{") else line.strip())
        return seen

    try:
        seen = logged_until(wrote)
        assert f"restart_command {shlex.join(restart)}: not run, the files were created (not changed)" in seen
        env_file = out_dir / "linkerd.env"
        first = _roots_pem(dev_agent)
        assert _sourced(env_file, "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS") == first

        dev_agent.rotate()  # a new SVID under the same root: nothing to do
        dev_agent.rotate_x509_bundle(keep_previous=True)  # new root added: change 1
        seen = logged_until(restarted)
        assert seen.count(wrote) == 1  # the plain rotation before wrote nothing
        both = _roots_pem(dev_agent)
        assert both != first and first in both
        assert _sourced(env_file, "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS") == both
        assert marker.read_text() == "restart\n"  # ... and restarted nothing

        dev_agent.drop_previous_x509_authorities()  # old root gone: change 2
        seen = logged_until(restarted)
        assert seen.count(wrote) == 1
        assert _sourced(env_file, "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS") == _roots_pem(dev_agent)
        assert (out_dir / "trust_anchors.pem").read_text() == _roots_pem(dev_agent)
        assert marker.read_text() == "restart\n" * 2

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_watch_usage_errors(tmp_path: Path) -> None:
    base = ["--address", "unix:///tmp/none.sock", "--server-name", "x"]
    done = subprocess.run(_cli(*base, "--watch"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--write" in done.stderr
    done = subprocess.run(
        _cli(*base, "--restart-command", "true"), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--watch" in done.stderr
