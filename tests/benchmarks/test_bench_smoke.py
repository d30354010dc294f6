"""The benchmark scripts run: ``python -m benchmarks --quick`` end to end, checked for shape only.

Quick mode uses tiny sample sizes and judges no goal, so nothing here asserts
on speed (the machine is shared and noisy); it proves each benchmark starts
its clients, measures and reports the keys the JSON consumers rely on.
spiffe-helper rows appear only when scripts/install-spire.sh has built it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _support.ci import require

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = ("rotation", "recovery", "coldstart", "idle", "jwt", "scale", "relay", "haproxy")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    env = {k: v for k, v in os.environ.items() if k != "SPIFFE_ENDPOINT_SOCKET"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert out.with_suffix(".md").exists()
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _result(report: dict[str, Any], name: str) -> dict[str, Any]:
    result: dict[str, Any] = report["benchmarks"][name]
    assert not result.get("error"), result.get("error")
    assert result["table"]["rows"], f"{name} printed no table"
    for goal in result["goals"]:
        assert goal["met"] is None  # quick mode never judges speed
    return result


def test_run_describes_the_machine(report: dict[str, Any]) -> None:
    assert report["quick"] is True
    assert set(BENCHMARKS) == set(report["benchmarks"])
    for key in ("date", "nproc", "cpu", "ram_gib", "python", "grpcio", "py_spiffe", "workdir_fs"):
        assert report["machine"][key], key


def test_rotation(report: dict[str, Any]) -> None:
    results = _result(report, "rotation")["results"]
    for key in ("ours_callback", "ours_files", "ours_sidecar", "pyspiffe_callback"):
        stats = results[key]["from_push"]
        assert stats["n"] >= 1 and stats["p50"] > 0 and stats["p99"] >= stats["p50"]
    if report["machine"]["spiffe_helper"]:
        assert results["spiffe_helper"]["from_push"]["n"] >= 1


def test_recovery(report: dict[str, Any]) -> None:
    clients = _result(report, "recovery")["results"]["clients"]
    for key in ("ours_callback", "ours_files", "ours_sidecar", "pyspiffe_callback"):
        assert clients[key]["missed"] == 0 and clients[key]["p50"] > 0


def test_coldstart(report: dict[str, Any]) -> None:
    results = _result(report, "coldstart")["results"]
    stats = results["stats"]
    for key in ("ours_files", "ours_exit", "ours: import spiffe_bridge", "py-spiffe: import spiffe"):
        assert stats[key]["p50"] > 0, key
    assert results["importtime"]["packages_cumulative_seconds"]


def test_idle(report: dict[str, Any]) -> None:
    processes = _result(report, "idle")["results"]["processes"]
    for key in ("ours_source", "ours_aio_source", "pyspiffe_source", "ours_sidecar"):
        assert processes[key]["cpu_s_per_s"] >= 0 and processes[key]["VmRSS"] > 0, key
        assert 0 < processes[key]["Uss"] <= processes[key]["Pss"] <= processes[key]["VmRSS"], key


def test_jwt(report: dict[str, Any]) -> None:
    rates = _result(report, "jwt")["results"]["per_second_p50"]
    for key in ("ours_same", "pyspiffe_same", "ours_distinct", "pyspiffe_distinct", "ours_source_same"):
        assert rates[key] > 0, key


def test_scale(report: dict[str, Any]) -> None:
    sizes = _result(report, "scale")["results"]["sizes"]
    assert {s["kind"] for s in sizes} == {"svids", "federated bundles"}
    for size in sizes:
        assert size["decode_validate_s"] > 0 and size["peak_bytes"] > 0 and size["message_bytes"] > 0


def test_relay(report: dict[str, Any]) -> None:
    result = _result(report, "relay")
    setups = result["results"]["setups"]
    assert {k.split("_")[0] for k in setups} == {"direct", "relay", "relay, forward before verify"}
    assert set(result["results"]["added_p50_p99"]) == {"relay_3", "relay, forward before verify_3"}
    for stats in setups.values():
        assert stats["last"]["n"] >= 1 and stats["last"]["p50"] >= stats["first"]["p50"] > 0


def test_haproxy(report: dict[str, Any]) -> None:
    notes = report["benchmarks"]["haproxy"].get("notes", [])
    installed = not any("not installed" in n for n in notes)
    require(installed, "haproxy not installed: run scripts/install-system-deps.sh")
    results = _result(report, "haproxy")["results"]
    for method in ("runtime-api", "sigusr2"):
        assert results[method]["visible"]["n"] == 2 and results[method]["requests"] > 0, method
    assert results["runtime-api"]["failures"] == 0 and results["runtime-api"]["pids"] == 1
    assert results["sigusr2"]["pids"] > 2  # master + a new worker per reload
