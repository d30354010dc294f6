"""docs/operations.md names every doctor check and every command's options."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()


def test_every_agent_check_is_documented() -> None:
    from test_doctor_agent import ALL_AGENT_CHECKS

    for name in ALL_AGENT_CHECKS:
        assert f"| {name} |" in DOC, name


@pytest.mark.parametrize(
    "name",
    [
        "cert_dir *DIR*",
        "cmd / reload_command",
        "pid_file_name",
        "health port *H:P*",
        "linkerd *DIR*",
        "envoy-sds *DIR*",
    ],
)
def test_every_config_check_is_documented(name: str) -> None:
    assert f"| {name} |" in DOC


@pytest.mark.parametrize(
    ("module", "command"),
    [
        ("spiffe_bridge.cli.inspect", "inspect"),
        ("spiffe_bridge.cli.doctor", "doctor"),
        ("spiffe_bridge.cli.watch", "watch"),
    ],
)
def test_every_option_is_documented(module: str, command: str) -> None:
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(module).add_parser(parser.add_subparsers())
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    for action in sub._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert re.search(rf"`{re.escape(flag)}\b", DOC), f"{command} {flag}"
