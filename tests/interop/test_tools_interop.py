"""inspect and doctor against a real SPIRE agent.

Proves against SPIRE what the dev-agent tests cannot: SPIRE refuses a call without the
security header with InvalidArgument (doctor's "honours the header" check), and the unix
attestor selectors doctor prints on PermissionDenied are the ones SPIRE matches: an entry
registered with the printed selector makes the identity appear for that user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from _support.ci import require
from interop_support import wait_for
from spire import SpireDeployment

from spiffe_bridge.cli.main import main

NOBODY = 65534


def doctor_as(uid: int, address: str) -> dict[str, Any]:
    cmd = [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        sys.executable,
        "-m",
        "spiffe_bridge",
    ]
    result = subprocess.run(
        [*cmd, "doctor", "--address", address, "--json", "--timeout", "10"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return {c["check"]: c for c in doc["checks"]} | {"_status": result.returncode}


def test_doctor_and_inspect_pass_against_spire(
    spire: SpireDeployment, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["doctor", "--address", spire.workload_api_address, "--hint", "web", "--json"])
    checks = {c["check"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert code == 0, [c for c in checks.values() if not c["ok"]]
    assert "refused with InvalidArgument" in checks["honours the header"]["detail"]
    assert (
        f"{spire.spiffe_id('/workload/web')} (hint 'web') is served" in checks["hint / SPIFFE ID"]["detail"]
    )
    code = main(["inspect", "--address", spire.workload_api_address, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {s["spiffe_id"] for s in doc["svids"]} == spire.expected_spiffe_ids
    assert {s["hint"] for s in doc["svids"]} == {"web", "db", "batch"}
    assert spire.trust_domain in doc["bundles"] and spire.trust_domain in doc["jwt_bundles"]


def test_permission_denied_selectors_are_the_ones_spire_matches(spire: SpireDeployment) -> None:
    require(os.geteuid() == 0, "needs root to run doctor as another uid")
    sock_dir = os.path.dirname(spire.socket_path)
    mode = os.stat(sock_dir).st_mode & 0o7777
    os.chmod(sock_dir, 0o755)
    try:
        checks = doctor_as(NOBODY, spire.workload_api_address)
        assert checks["_status"] == 1 and checks["connectable"]["ok"] and checks["honours the header"]["ok"]
        identity = checks["identity issued"]
        assert not identity["ok"] and f"unix:uid:{NOBODY} unix:user:nobody" in identity["detail"]
        assert f"-selector unix:uid:{NOBODY}" in identity["fix"]
        # register exactly what doctor printed, for a user that had nothing
        spire.create_entry("/workload/nobody", selectors=["unix:user:nobody"])
        passed = wait_for(
            lambda: (c := doctor_as(NOBODY, spire.workload_api_address))["_status"] == 0 and c,
            "doctor to pass for nobody after the entry was created",
            timeout=60,
            interval=1.0,
        )
        assert spire.spiffe_id("/workload/nobody") in passed["identity issued"]["detail"]
    finally:
        os.chmod(sock_dir, mode)


def test_validate_jwt_through_spire_and_locally(
    spire: SpireDeployment, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from spiffe_bridge import WorkloadClient

    with WorkloadClient(spire.workload_api_address, timeout=30) as client:
        token = client.fetch_jwt_svid("db", hint="web").token
        jwks = client.fetch_jwt_bundles().bundle_for(spire.trust_domain)
    assert jwks is not None
    bundle = tmp_path / f"{spire.trust_domain}.json"
    bundle.write_bytes(jwks.jwks)
    for source in (["--address", spire.workload_api_address], ["--bundle", str(bundle)]):
        assert main(["validate", "jwt", token, "--audience", "db", *source]) == 0
        assert capsys.readouterr().out.startswith(f"valid: {spire.spiffe_id('/workload/web')} for db")
        assert main(["validate", "jwt", token, "--audience", "web", *source]) == 1
        assert capsys.readouterr().out.startswith("invalid: ")
