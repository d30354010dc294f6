"""Side by side with spiffe-helper: one helper.conf, two programs, one agent, one moment.

The very same file is given to ``spiffe-helper -config helper.conf -daemon-mode=false``
and to ``spiffe-bridge run -config helper.conf -daemon-mode=false``, started together in
two working directories (``cert_dir`` is relative), against the same SPIRE agent. If a
rotation landed between their fetches (the leaf serials differ) the pair is run again.
Then the certificates, key and bundle must be the same bytes with the same modes, the
same files must exist (ours adds only the flat layout's ``.spiffe-bridge-files.json``,
docs/formats.md), the JWT bundle must hold the same keys per trust domain (we embed the
agent's JWKS verbatim, spiffe-helper re-serialises it), and the JWT-SVIDs must have the
same header and claims shape (they are minted separately, so only iat/exp differ).
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from interop_support import SidecarProcess, helper_process, jose_parts, pem_certs, spiffe_id_of
from spire import SpireDeployment

from spiffe_bridge import WorkloadClient

pytest_plugins = ("interop_support",)

OUR_BOOKKEEPING = {".spiffe-bridge-files.json"}  # the flat layout's record, if flat is chosen
JWT_FILES = """
jwt_bundle_file_name = "jwt_bundle.json"
jwt_svids = [
  {jwt_audience = "interop", jwt_svid_file_name = "interop.token"},
  {jwt_audience = "extra", jwt_extra_audiences = ["more"], jwt_svid_file_name = "extra.token"},
]
"""
VARIANTS = {
    "defaults": ("spire", ""),
    "hint-federated": ("spire", 'hint = "web"\ninclude_federated_domains = true\n'),
    "hint-intermediates-modes": (
        "spire",
        'hint = "db"\nadd_intermediates_to_bundle = true\ncert_file_mode = 0640\nkey_file_mode = 0400\n'
        "jwt_svid_file_mode = 0640\njwt_bundle_file_mode = 0644\n",
    ),
    "upstream-chain": ("spire_upstream", 'hint = "batch"\n'),
    "upstream-intermediates-federated": (
        "spire_upstream",
        'hint = "web"\nadd_intermediates_to_bundle = true\ninclude_federated_domains = true\n',
    ),
}


def helper_conf(d: SpireDeployment, settings: str) -> str:
    return (
        f'agent_address = "{d.socket_path}"\n'
        'cert_dir = "certs"\n'
        'svid_file_name = "svid.pem"\nsvid_key_file_name = "svid_key.pem"\n'
        'svid_bundle_file_name = "svid_bundle.pem"\n' + settings + JWT_FILES
    )


def run_side_by_side(binary: Path, conf_text: str, base: Path) -> tuple[Path, Path]:
    """Run both one-shot with the same file at the same time; retry if a rotation split them."""
    for attempt in range(4):
        root = base / f"attempt-{attempt}"
        conf = root / "helper.conf"
        for name in ("helper", "bridge"):
            (root / name / "certs").mkdir(parents=True)  # spiffe-helper needs cert_dir to exist
        conf.write_text(conf_text)
        helper = helper_process(binary, conf, root / "helper", "-daemon-mode=false")
        bridge = SidecarProcess(["-config", str(conf), "-daemon-mode=false"], root / "bridge")
        try:
            helper_out, _ = helper.communicate(timeout=30)
            assert helper.returncode == 0, helper_out
            assert bridge.wait(60) == 0, bridge.log
        finally:
            if helper.poll() is None:
                helper.kill()
                helper.wait()
            bridge.close()
        theirs, ours = root / "helper" / "certs", root / "bridge" / "certs"
        if _leaf(theirs).serial_number == _leaf(ours).serial_number:
            return theirs, ours
    raise AssertionError("a rotation split every one of four runs")


def _leaf(certs: Path) -> Any:
    return pem_certs((certs / "svid.pem").read_bytes())[0]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _jwks_keys(b64: str) -> list[dict[str, Any]]:
    """The keys of a spiffe-helper-style JWT bundle entry, without "use" (go-jose drops it)."""
    return [{k: v for k, v in key.items() if k != "use"} for key in json.loads(base64.b64decode(b64))["keys"]]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_helper_conf_gives_the_same_files(
    variant: str, request: pytest.FixtureRequest, spiffe_helper_bin: Path, tmp_path: Path
) -> None:
    fixture, settings = VARIANTS[variant]
    d: SpireDeployment = request.getfixturevalue(fixture)
    theirs, ours = run_side_by_side(spiffe_helper_bin, helper_conf(d, settings), tmp_path)

    # Same visible names; ours are links into the ..data version directory (the documented
    # difference of the default symlink layout), theirs plain files.
    visible = {n for n in os.listdir(ours) if not n.startswith("..")} - OUR_BOOKKEEPING
    assert sorted(os.listdir(theirs)) == sorted(visible)
    for name in ("svid.pem", "svid_key.pem", "svid_bundle.pem"):
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
        assert _mode(ours / name) == _mode(theirs / name), name

    # the hinted SVID (default: the first the agent lists) with the chain/bundle split asked for
    hint = next((line.split('"')[1] for line in settings.splitlines() if line.startswith("hint")), None)
    expected = next(e.spiffe_id for e in d.entries if e.hint == hint) if hint else None
    chain = pem_certs((ours / "svid.pem").read_bytes())
    if expected:
        assert spiffe_id_of(chain[0]) == expected
    upstream = fixture == "spire_upstream"
    moved = "add_intermediates_to_bundle = true" in settings
    assert len(chain) == (2 if upstream and not moved else 1)
    federated = "include_federated_domains = true" in settings
    roots = len(pem_certs((ours / "svid_bundle.pem").read_bytes()))
    assert roots == 1 + (upstream and moved) + federated

    # JWT bundle: same trust domains, same keys
    mine, helpers = (json.loads((p / "jwt_bundle.json").read_bytes()) for p in (ours, theirs))
    assert list(mine) == list(helpers) == sorted([d.trust_domain, d.federated_trust_domain or ""])
    for td in mine:
        assert _jwks_keys(mine[td]) == _jwks_keys(helpers[td]), td
    assert _mode(ours / "jwt_bundle.json") == _mode(theirs / "jwt_bundle.json")

    # JWT-SVIDs: same header, same claims shape, same subject and audience
    with WorkloadClient(d.workload_api_address, timeout=15) as client:
        for name, audience in (("interop.token", "interop"), ("extra.token", "extra")):
            our_token, their_token = (ours / name).read_text(), (theirs / name).read_text()
            (oh, oc), (th, tc) = jose_parts(our_token), jose_parts(their_token)
            assert oh == th, name
            assert sorted(oc) == sorted(tc) == ["aud", "exp", "iat", "sub"]
            assert oc["sub"] == tc["sub"] and oc["exp"] - oc["iat"] == tc["exp"] - tc["iat"]
            if expected:
                assert oc["sub"] == expected
            for token in (our_token, their_token):
                assert str(client.validate_jwt_svid(token, audience).spiffe_id) == oc["sub"]
            assert _mode(ours / name) == _mode(theirs / name), name
    # The one documented difference: spiffe-helper's one-shot mode drops jwt_extra_audiences
    # (it fetches with the main audience only); spiffe-bridge honours them (docs/sidecar.md).
    assert jose_parts((ours / "interop.token").read_text())[1]["aud"] == ["interop"]
    assert jose_parts((theirs / "interop.token").read_text())[1]["aud"] == ["interop"]
    assert jose_parts((ours / "extra.token").read_text())[1]["aud"] == ["extra", "more"]
    assert jose_parts((theirs / "extra.token").read_text())[1]["aud"] == ["extra"]
