"""The self-contained TLS examples run and show what their docstrings promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tls"


def _run(name: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SPIFFE_ENDPOINT_SOCKET"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_demo() -> None:
    out = _run("demo.py")
    assert "[server sees spiffe://example.org/client" in out
    assert "old connection still fine" in out
    assert "client refused the server: peer spiffe://example.org/server is not authorized" in out
    assert "server refused a client: peer spiffe://example.org/client is not authorized" in out


def test_asyncio_echo() -> None:
    out = _run("asyncio_echo.py")
    assert "spiffe://example.org/client said: hello after rotation" in out
    assert "refused: peer spiffe://example.org/server is not authorized" in out


def test_http_clients() -> None:
    out = _run("http_clients.py")
    assert "urllib       -> hello spiffe://example.org/client" in out
    assert "http.client  -> hello spiffe://example.org/client" in out


def test_grpc_echo() -> None:
    out = _run("grpc_echo.py")
    assert "hello spiffe://example.org/client: after rotation" in out
    assert "PERMISSION_DENIED: peer spiffe://example.org/client is not authorized" in out


@pytest.mark.parametrize("name", ["echo_server.py", "echo_client.py"])
def test_cli_examples_have_help(name: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "SPIFFE ID" in done.stdout
