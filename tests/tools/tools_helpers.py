"""Shared helpers for the inspect/doctor/watch/validate tests: run the CLI, write real file sets."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _support.ci import require

from spiffe_bridge import WorkloadClient
from spiffe_bridge._encoding import pem_block
from spiffe_bridge.cli.main import main
from spiffe_bridge.fileset import FileSetWriter
from spiffe_bridge.formats import X509Options, render_x509
from spiffe_bridge.x509context import X509Context

PYTHON = sys.executable
NOBODY = 65534


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; (status, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    """Run the CLI with --json and parse its output."""
    code, out, err = run(capsys, *argv, "--json")
    assert out, err
    return code, json.loads(out)


def context(agent: Any) -> X509Context:
    """The agent's current X.509 context, fetched like any workload would."""
    with WorkloadClient(agent.address, timeout=10) as client:
        return client.fetch_x509_context()


def write_format(agent: Any, directory: Path, fmt: str, **options: Any) -> X509Context:
    """Render the agent's material in ``fmt`` and write it with our writer (symlink layout)."""
    ctx = context(agent)
    opts = X509Options(linkerd_server_name="web.local", linkerd_workload_api_address=agent.address, **options)
    FileSetWriter(str(directory)).write(render_x509(fmt, ctx, opts))
    return ctx


def write_spiffe_fs(directory: Path, ctx: X509Context, key_first: bool = True) -> None:
    """A SPIFFE Filesystem Delivery folder: credential-bundle.pem and <td>.spiffe-trust-bundle.pem."""
    svid = ctx.default_svid
    full = svid.key_pem + svid.chain_pem if key_first else svid.chain_pem + svid.key_pem
    directory.mkdir(exist_ok=True)
    (directory / "credential-bundle.pem").write_bytes(full)
    os.chmod(directory / "credential-bundle.pem", 0o600)
    for td, bundle in ctx.bundles.items():
        (directory / f"{td.name}.spiffe-trust-bundle.pem").write_bytes(bundle.pem)


def pem_files(directory: Path, chain_der: list[bytes], key_der: bytes, bundle_der: list[bytes]) -> None:
    """spiffe-helper's three PEM files from raw DER (for deliberately broken sets)."""
    directory.mkdir(exist_ok=True)
    (directory / "svid.pem").write_bytes(b"".join(pem_block("CERTIFICATE", d) for d in chain_der))
    (directory / "svid_key.pem").write_bytes(pem_block("PRIVATE KEY", key_der))
    os.chmod(directory / "svid_key.pem", 0o600)
    (directory / "svid_bundle.pem").write_bytes(b"".join(pem_block("CERTIFICATE", d) for d in bundle_der))


def cli_as(uid: int, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess as another uid/gid (setpriv; the tests run as root)."""
    environ = {**os.environ, **(env or {})}
    cmd = [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        PYTHON,
        "-m",
        "spiffe_bridge",
        *argv,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=environ, check=False)


@functools.cache
def _nobody_problem() -> str:
    """Why the CLI cannot run as uid 65534 here ('' when it can)."""
    if os.geteuid() != 0:
        return "these tests need root (to switch to uid 65534)"
    if shutil.which("setpriv") is None:
        return "these tests need setpriv (util-linux, scripts/install-system-deps.sh)"
    probe = cli_as(NOBODY, "doctor", "--help")
    if probe.returncode != 0:
        return f"uid {NOBODY} cannot run the CLI (checkout and venv readable?): {probe.stderr[-300:]}"
    return ""


def need_root() -> None:
    """Tests that run the CLI as uid 65534 need root and setpriv; under CI a missing one fails."""
    problem = _nobody_problem()
    require(not problem, problem)
