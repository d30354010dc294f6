"""``systemd-analyze verify`` accepts every unit of the examples, with nothing to say about them.

verify checks that each ExecStart binary exists, so the units are verified as copies
whose paths point at this session's installed spiffe-bridge and at stand-ins for the
binaries installed elsewhere (SPIRE, linkerd2-proxy), with the units' users created.
verify exits 0 even for unknown keys or bad values, so any line it prints about one
of these units fails the test.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "examples").glob("*/**/*.service"))


def _mapping(root: Path, bin_dir: Path) -> list[tuple[str, str]]:
    return [
        ("/opt/spiffe-bridge/bin/spiffe-bridge", f"{bin_dir}/spiffe-bridge"),
        ("/usr/local/bin/spiffe-bridge", f"{bin_dir}/spiffe-bridge"),
        ("/opt/", f"{root}/opt/"),
        ("/etc/", f"{root}/etc/"),
    ]


def _stand_ins(root: Path) -> None:
    """What install.sh puts in place, or a do-nothing executable for binaries fetched separately."""
    spire_bin = root / "opt" / "spire" / "bin"
    spire_bin.mkdir(parents=True, exist_ok=True)
    (spire_bin / "agent-start.sh").write_bytes(
        (REPO / "examples/linkerd-vm/spire/agent-start.sh").read_bytes()
    )
    for stub in (spire_bin / "spire-server", root / "opt" / "linkerd-proxy" / "linkerd2-proxy"):
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\nexit 0\n")
    for exe in (
        spire_bin / "agent-start.sh",
        spire_bin / "spire-server",
        root / "opt/linkerd-proxy/linkerd2-proxy",
    ):
        exe.chmod(0o755)


def _verify(root: Path, bin_dir: Path, texts: dict[str, str]) -> list[str]:
    """verify the units (name -> text); the lines it printed about them, and its failure if any."""
    unit_dir = root / "units"
    unit_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in texts.items():
        path = unit_dir / name
        for old, new in _mapping(root, bin_dir):
            text = text.replace(old, new)
        path.write_text(text)
        paths.append(str(path))
    done = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    ours = [line for line in lines if any(name in line for name in texts)]
    if done.returncode != 0:
        ours.append(f"systemd-analyze verify exited {done.returncode}: {lines}")
    return ours


def test_examples_have_units() -> None:
    assert {p.name for p in UNITS} >= {
        "spiffe-relay.service",
        "spiffe-bridge.service",
        "linkerd-proxy.service",
    }


def test_every_example_unit_verifies_clean(
    scratch: Path, installed_bin: Path, system_users: list[str]
) -> None:
    root = scratch / "verify"
    _stand_ins(root)
    problems = _verify(root, installed_bin, {p.name: p.read_text() for p in UNITS})
    assert problems == []


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (("RestartSec=1", "RestartSec=soon"), "RestartSec"),
        (("[Install]", "[Install]\nWantedBye=x"), "WantedBye"),
    ],
)
def test_verify_problems_are_caught(
    scratch: Path, installed_bin: Path, system_users: list[str], edit: tuple[str, str], expect: str
) -> None:
    """The check above can fail: verify's warnings about a unit (exit status 0) are reported."""
    root = scratch / f"verify-bad-{expect}"
    _stand_ins(root)
    relay = REPO / "examples/linkerd-vm/systemd/spiffe-relay.service"
    text = relay.read_text()
    assert edit[0] in text
    problems = _verify(root, installed_bin, {relay.name: text.replace(edit[0], edit[1], 1)})
    assert any(expect in line for line in problems), problems
