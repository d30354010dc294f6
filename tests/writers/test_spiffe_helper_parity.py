"""The pem and JWT formats against the real spiffe-helper, fed the same Workload API answer.

spiffe-helper (built by scripts/install-spire.sh, or from ``$SPIRE_BIN_DIR``) runs once
(``daemon_mode = false``) against the dev agent; spiffe-bridge renders what the same
agent returns. The dev agent keeps its SVIDs until told to rotate, so both see the
same material. Missing binary: skip (``CI=true``: fail), like the other interop tests.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _support.binaries import spire_bin_dir

from spiffe_bridge import WorkloadClient
from spiffe_bridge.fileset import FileSetWriter
from spiffe_bridge.formats import X509Options, render_jwt, render_x509

pytestmark = pytest.mark.interop
REPO = Path(__file__).resolve().parents[2]


def helper_binary() -> Path:
    return spire_bin_dir("spiffe-helper") / "spiffe-helper"


def run_helper(agent: Any, out: Path, **settings: object) -> None:
    out.mkdir()
    lines = [
        f'agent_address = "{agent.socket_path}"',
        f'cert_dir = "{out}"',
        'svid_file_name = "svid.pem"',
        'svid_key_file_name = "svid_key.pem"',
        'svid_bundle_file_name = "svid_bundle.pem"',
        'jwt_bundle_file_name = "jwt_bundle.json"',
        'jwt_svids = [{jwt_audience = "db", jwt_svid_file_name = "jwt_svid.token"}]',
        "daemon_mode = false",
    ]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    conf = out.parent / f"{out.name}.conf"
    conf.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        [str(helper_binary()), "-config", str(conf)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.dev_agent(intermediate=True, federate_with=["partner.test", "another.test"])
@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"add_intermediates_to_bundle": True},
        {"include_federated_domains": True},
        {"add_intermediates_to_bundle": True, "include_federated_domains": True, "omit_expired": True},
    ],
    ids=["defaults", "intermediates", "federated", "all"],
)
def test_pem_files_are_byte_identical(dev_agent: Any, tmp_path: Path, settings: dict[str, bool]) -> None:
    run_helper(dev_agent, tmp_path / "helper", **settings)
    with WorkloadClient(dev_agent.address) as client:
        ctx = client.fetch_x509_context()
    options = X509Options(federated_layout="merged", **settings)  # type: ignore[arg-type]
    FileSetWriter(tmp_path / "bridge", layout="flat").write(render_x509("pem", ctx, options))
    for name in ("svid.pem", "svid_key.pem", "svid_bundle.pem"):
        helper = tmp_path / "helper" / name
        bridge = tmp_path / "bridge" / name
        assert bridge.read_bytes() == helper.read_bytes(), name
        assert bridge.stat().st_mode & 0o777 == helper.stat().st_mode & 0o777, name


def without_use(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k != "use"}


@pytest.mark.dev_agent(federate_with=["partner.test"])
def test_jwt_bundle_file_has_the_same_content(dev_agent: Any, tmp_path: Path) -> None:
    run_helper(dev_agent, tmp_path / "helper")
    with WorkloadClient(dev_agent.address) as client:
        bundles = client.fetch_jwt_bundles()
    (ours,) = [f for f in render_jwt([], bundles) if f.name == "jwt_bundle.json"]
    theirs = json.loads((tmp_path / "helper" / "jwt_bundle.json").read_bytes())
    mine = json.loads(ours.data)
    assert list(mine) == list(theirs) == ["example.org", "partner.test"]
    for td in mine:
        # spiffe-helper re-serialises the JWKS through go-spiffe/go-jose, which drops each
        # key's "use" member; we embed the agent's JWKS verbatim. Same keys otherwise.
        ours_keys = [without_use(k) for k in json.loads(base64.b64decode(mine[td]))["keys"]]
        their_keys = json.loads(base64.b64decode(theirs[td]))["keys"]
        assert ours_keys == their_keys
    token = (tmp_path / "helper" / "jwt_svid.token").read_bytes()
    assert dev_agent.validate_jwt_svid(token.decode(), "db")[0] == "spiffe://example.org/workload"
    assert (tmp_path / "helper" / "jwt_bundle.json").stat().st_mode & 0o777 == ours.mode
