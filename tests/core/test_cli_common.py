"""Options every command shares: --version (Go spelling included), --log-level and --log-format."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import spiffe_bridge
from spiffe_bridge.cli.main import COMMANDS


@pytest.mark.parametrize("argv", [["--version"], ["run", "-version"], *([c, "--version"] for c in COMMANDS)])
def test_version_everywhere(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "spiffe_bridge", *argv], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"spiffe-bridge {spiffe_bridge.__version__} (Python ")


def test_version_is_the_installed_distributions() -> None:
    # pyproject reads the version from spiffe_bridge.__version__: one statement of the fact
    assert version("spiffe-bridge") == spiffe_bridge.__version__


def test_log_format_flag_overrides_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "helper.conf"
    config.write_text('log_format = "text"\nnot_a_key = 1\n')
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "spiffe_bridge",
            "run",
            "-config",
            str(config),
            "--check",
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    entry = json.loads(out.stderr.strip().splitlines()[-1])
    assert entry["level"] == "error" and "not_a_key" in entry["message"]


def test_log_level_flag_is_checked() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "spiffe_bridge", "relay", "--log-level", "loud"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--log-level" in out.stderr


def test_a_closed_pipe_exits_quietly() -> None:
    """`spiffe-bridge ... | head`: no traceback when the reader has gone."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write
    try:
        out = subprocess.run(
            [sys.executable, "-m", "spiffe_bridge", "--help"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert out.returncode == 0 and out.stderr == ""


def test_address_everywhere_with_the_old_names_as_aliases() -> None:
    """Every command that talks to (or is) an agent takes --address; --upstream and --socket still work."""
    import argparse

    from spiffe_bridge.cli import dev_agent as devagent_cli
    from spiffe_bridge.cli import relay as relay_cli
    from spiffe_bridge.cli.main import _add_common

    for module, old, dest in ((relay_cli, "--upstream", "upstream"), (devagent_cli, "--socket", "socket")):
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="command")
        module.add_parser(sub)
        name = next(iter(sub.choices))
        _add_common(sub.choices[name])
        listen = ["--listen", "unix:///tmp/x.sock"] if module is relay_cli else []
        for flag in ("--address", old):
            args = parser.parse_args([name, flag, "unix:///tmp/a.sock", *listen])
            assert getattr(args, dest) == "unix:///tmp/a.sock"


@pytest.mark.parametrize(
    ("command", "argv", "dest", "seconds"),
    [
        ("relay", ["--listen", "unix:///tmp/x.sock", "--hold", "1m30s"], "hold", 90.0),
        ("relay", ["--listen", "unix:///tmp/x.sock", "--startup-wait", "250ms"], "startup_wait", 0.25),
        ("doctor", ["--timeout", "5s"], "timeout", 5.0),
        ("inspect", ["--timeout", "2m"], "timeout", 120.0),
        ("dev-agent", ["--ttl", "1h"], "ttl", 3600.0),
    ],
)
def test_durations_take_units_everywhere(command: str, argv: list[str], dest: str, seconds: float) -> None:
    import argparse
    import importlib

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    importlib.import_module(COMMANDS[command][0]).add_parser(sub)
    assert getattr(parser.parse_args([command, *argv]), dest) == seconds
