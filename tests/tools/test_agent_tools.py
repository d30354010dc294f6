"""``inspect --address``, ``watch`` and ``validate jwt`` against the dev agent."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from typing import IO, Any

import pytest
from tools_helpers import PYTHON, run, run_json


@pytest.mark.dev_agent(intermediate=True, federate_with=["partner.example"])
def test_inspect_address_json_has_the_fixed_keys(dev_agent: Any, capsys: pytest.CaptureFixture[str]) -> None:
    dev_agent.set_identities(["spiffe://example.org/web", "spiffe://example.org/db"])
    code, doc = run_json(capsys, "inspect", "--address", dev_agent.address)
    assert code == 0
    assert [s["spiffe_id"] for s in doc["svids"]] == ["spiffe://example.org/web", "spiffe://example.org/db"]
    svid = doc["svids"][0]
    assert {
        "spiffe_id",
        "hint",
        "serial",
        "not_before",
        "not_after",
        "key_type",
        "dns_names",
        "chain",
    } <= set(svid)
    assert svid["chain"][1].startswith("CN=example.org intermediate CA")
    leaf = dev_agent.svids[0].leaf
    assert svid["serial"] == format(leaf.serial_number, "x")
    assert set(doc["bundles"]) == {"example.org", "partner.example"}
    assert doc["federated"] == ["partner.example"]
    root = doc["bundles"]["example.org"][0]
    assert set(root) == {"subject", "not_before", "not_after"}
    keys = doc["jwt_bundles"]["example.org"]
    assert keys[0]["algorithms"] == ["ES256"] and keys[0]["key_id"]


def test_inspect_address_text_and_dns_names(dev_agent: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from spiffe_bridge.devagent.identity import Identity

    dev_agent.set_identities(
        [Identity("spiffe://example.org/web", hint="internal", dns_names=("web.local",))]
    )
    code, out, _ = run(capsys, "inspect", "--address", dev_agent.address)
    assert code == 0
    assert "X.509-SVID spiffe://example.org/web (hint 'internal')" in out
    assert "dns names: web.local" in out and "JWT bundle example.org" in out
    assert "PRIVATE KEY" not in out


def test_inspect_address_denied_fails(dev_agent: Any, capsys: pytest.CaptureFixture[str]) -> None:
    dev_agent.deny()
    code, _, err = run(capsys, "inspect", "--address", dev_agent.address, "--timeout", "5")
    assert code == 1 and "error" in err


class _Lines:
    """The lines a process prints, read by a thread so none waits unseen in a buffer.

    ``select()`` on the pipe, then ``readline()``, missed a second line that arrived in the
    same read as the first (it sat in the text buffer while the fd showed nothing): the
    cause of this test's failures under load, where both first events come together.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put("")

    def next(self, timeout: float = 15.0) -> str:
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no line from watch in time") from None
        assert line, "watch exited early"
        return line


def test_watch_prints_a_line_per_update_until_interrupted(dev_agent: Any) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [PYTHON, "-m", "spiffe_bridge", "watch", "--address", dev_agent.address, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines = _Lines(proc.stdout)
    try:
        first = [json.loads(lines.next()) for _ in range(2)]
        assert {e["kind"] for e in first} == {"x509", "jwt_bundles"}
        x509 = next(e for e in first if e["kind"] == "x509")
        old_serial = x509["svids"][0]["serial"]
        dev_agent.rotate()
        update = json.loads(lines.next())
        assert update["kind"] == "x509" and update["svids"][0]["serial"] != old_serial
        dev_agent.rotate_jwt_bundle()
        update = json.loads(lines.next())
        assert update["kind"] == "jwt_bundles" and len(update["jwt_bundles"]["example.org"]) == 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_watch_count_text_lines(dev_agent: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "watch", "--address", dev_agent.address, "--count", "1", "--no-jwt")
    assert code == 0
    (line,) = out.splitlines()
    assert " x509 spiffe://example.org/workload serial " in line and "bundles example.org(1)" in line


def test_validate_jwt_through_the_agent(dev_agent: Any, capsys: pytest.CaptureFixture[str]) -> None:
    token = dev_agent.mint_jwt_svid(["db"])
    code, doc = run_json(capsys, "validate", "jwt", token, "--audience", "db", "--address", dev_agent.address)
    assert code == 0 and doc["valid"] and doc["spiffe_id"] == "spiffe://example.org/workload"
    code, doc = run_json(
        capsys, "validate", "jwt", token, "--audience", "web", "--address", dev_agent.address
    )
    assert code == 1 and not doc["valid"] and "does not contain 'web'" in doc["reason"]


def test_validate_jwt_locally_against_a_bundle_file(
    dev_agent: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    token = dev_agent.mint_jwt_svid(["db"])
    jwks = tmp_path / "example.org.json"
    jwks.write_bytes(dev_agent.ca.jwks_json())
    code, out, _ = run(capsys, "validate", "jwt", token, "--audience", "db", "--bundle", str(jwks))
    assert code == 0 and out.startswith("valid: spiffe://example.org/workload for db")
    # expired (signed by the agent's current key): the reason is named
    now = int(time.time())
    claims = {"sub": "spiffe://example.org/workload", "aud": ["db"], "exp": now - 60, "iat": now - 120}
    expired = dev_agent.ca.sign_jwt(claims)
    code, out, _ = run(capsys, "validate", "jwt", expired, "--audience", "db", "--bundle", str(jwks))
    assert code == 1 and "has expired" in out
    # signed by a key the bundle no longer has
    dev_agent.rotate_jwt_bundle(keep_previous=False)
    jwks.write_bytes(dev_agent.ca.jwks_json())
    code, out, _ = run(capsys, "validate", "jwt", token, "--audience", "db", "--bundle", str(jwks))
    assert code == 1 and "is not in the bundle of example.org" in out


def test_validate_jwt_rejects_garbage_and_empty(dev_agent: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "validate", "jwt", "not-a-token", "--audience", "db", "--address", dev_agent.address
    )
    assert code == 1 and out.startswith("invalid:")
    assert run(capsys, "validate", "jwt", " ", "--audience", "db")[0] == 2


def test_inspect_address_of_an_x509_only_agent(dev_agent: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import grpc

    dev_agent.fail_next("FetchJWTBundles", grpc.StatusCode.UNIMPLEMENTED, "not here")
    code, doc = run_json(capsys, "inspect", "--address", dev_agent.address)
    assert code == 0 and doc["jwt_bundles"] == {} and doc["svids"]
