"""``spiffe-bridge run`` against the real agent, writing every format at once.

One configuration: spiffe-helper's keys (PEM files in ``cert_dir`` with the web SVID by
hint, federated CAs merged into the bundle, a JWT-SVID with an extra audience and the
JWT bundle) plus an ``outputs`` entry for each format. Every file is checked with tools
that are not our code: ``openssl verify`` for the chain against the written bundle,
OpenSSL or cryptography for key/certificate pairs and PKCS#12, bash for linkerd.env,
the agent's ValidateJWTSVID for the token, and ``spire-server bundle show`` for roots.
One-shot mode writes it once and exits 0; daemon mode is ready, then follows a
rotation on disk (every format switches to the same new SVID).
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from interop_support import (
    Health,
    der_of,
    key_matches,
    openssl_key_matches,
    openssl_verify,
    pem_certs,
    sidecar,
    spiffe_id_of,
    split_der,
    wait_for,
)
from spiffe import TrustDomain as PyTrustDomain
from spiffe import WorkloadApiClient
from spire import SpireDeployment

from spiffe_bridge import WorkloadClient
from spiffe_bridge.fileset import read_current

pytest_plugins = ("interop_support",)

PASSWORD = "interop-p12-password"
AUDIENCE = "interop"
SERVER_NAME = "web.spire.test"
#: Directories with an X.509-SVID in them (linkerd carries only the ID and the roots).
SVID_DIRS = ("pem", "pem-linked", "combined", "envoy", "pkcs12", "der")
LINKED = ("pem-linked", "combined", "envoy", "pkcs12", "der", "linkerd")


def config(spire: SpireDeployment, extra: str = "") -> str:
    return f"""
agent_address = "{spire.socket_path}"
cert_dir = "pem"
layout = "flat"  # spiffe-helper-style plain files here; the outputs use the symlink layout
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
hint = "web"
include_federated_domains = true
jwt_svids = [
  {{jwt_audience = "{AUDIENCE}", jwt_extra_audiences = ["second"], jwt_svid_file_name = "web.token"}},
]
jwt_bundle_file_name = "jwt_bundle.json"
outputs = [
  {{format = "pem", dir = "pem-linked", include_federated_domains = true}},
  {{format = "combined", dir = "combined"}},
  {{format = "envoy-sds", dir = "envoy"}},
  {{format = "pkcs12", dir = "pkcs12"}},
  {{format = "der", dir = "der", include_federated_domains = true}},
  {{format = "linkerd", dir = "linkerd", linkerd_server_name = "{SERVER_NAME}"}},
]
{extra}"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class Expected:
    """What the files must hold, from SPIRE's side."""

    def __init__(self, spire: SpireDeployment) -> None:
        assert spire.federated_ca is not None
        self.web = spire.spiffe_id("/workload/web")
        self.own_roots = pem_certs(spire.server.bundle_pem().encode())
        self.fed_root = x509.load_der_x509_certificate(spire.federated_ca.cert_der)
        self.trust_domain = spire.trust_domain
        self.federated = spire.federated_trust_domain
        self.address = spire.socket_path


def check_chain(
    chain: list[x509.Certificate], roots: list[x509.Certificate], exp: Expected, work: Path
) -> int:
    assert spiffe_id_of(chain[0]) == exp.web
    assert [der_of(c) for c in roots] == [der_of(c) for c in exp.own_roots]
    openssl_verify(chain, roots, work)
    return chain[0].serial_number


def check_pem(run: Path, exp: Expected, work: Path) -> int:
    d = run / "pem"  # spiffe-helper's layout: flat files, federated CAs merged into the bundle
    chain, bundle = pem_certs((d / "svid.pem").read_bytes()), pem_certs((d / "svid_bundle.pem").read_bytes())
    assert [der_of(c) for c in bundle[len(exp.own_roots) :]] == [der_of(exp.fed_root)]
    serial = check_chain(chain, bundle[: len(exp.own_roots)], exp, work / "pem")
    assert openssl_key_matches(d / "svid.pem", d / "svid_key.pem")
    assert (mode(d / "svid.pem"), mode(d / "svid_key.pem"), mode(d / "svid_bundle.pem")) == (
        0o644,
        0o600,
        0o644,
    )
    return serial


def check_pem_linked(run: Path, exp: Expected, work: Path) -> int:
    names = ["svid.pem", "svid_key.pem", "svid_bundle.pem", f"federated/{exp.federated}.pem"]
    files = read_current(run / "pem-linked", names)  # one version, however the links move
    pinned = work / "pem-linked-files"
    pinned.mkdir(parents=True, exist_ok=True)
    for name in names[:2]:
        (pinned / name).write_bytes(files[name])
    assert openssl_key_matches(pinned / "svid.pem", pinned / "svid_key.pem")
    assert pem_certs(files[names[3]]) == [exp.fed_root]  # per trust domain: not in the own bundle
    return check_chain(
        pem_certs(files["svid.pem"]), pem_certs(files["svid_bundle.pem"]), exp, work / "linked"
    )


def check_combined(run: Path, exp: Expected, work: Path) -> int:
    files = read_current(run / "combined", ["svid_combined.pem", "svid_bundle.pem"])
    combined = files["svid_combined.pem"]
    key = serialization.load_pem_private_key(combined, None)
    chain = pem_certs(combined)
    assert combined.index(b"PRIVATE KEY") > combined.rindex(b"END CERTIFICATE")  # chain, then key
    assert key_matches(key, chain[0])
    assert mode(run / "combined" / "svid_combined.pem") == 0o600
    return check_chain(chain, pem_certs(files["svid_bundle.pem"]), exp, work / "combined")


def _secret(data: bytes) -> dict[str, Any]:
    doc = json.loads(data)
    (resource,) = doc["resources"]
    assert resource["@type"] == doc["type_url"]
    return dict(resource)


def _validator_domains(secret: dict[str, Any]) -> dict[str, list[x509.Certificate]]:
    typed = secret["validation_context"]["custom_validator_config"]["typed_config"]
    return {d["name"]: pem_certs(d["trust_bundle"]["inline_string"].encode()) for d in typed["trust_domains"]}


def check_envoy(run: Path, exp: Expected, work: Path) -> int:
    names = ["sds_tls_certificate.json", "sds_validation_context.json", "sds_all_bundles.json"]
    files = read_current(run / "envoy", names)
    cert = _secret(files[names[0]])
    assert cert["name"] == "default"
    chain = pem_certs(cert["tls_certificate"]["certificate_chain"]["inline_string"].encode())
    key = serialization.load_pem_private_key(
        cert["tls_certificate"]["private_key"]["inline_string"].encode(), None
    )
    assert key_matches(key, chain[0])
    rootca, everything = _secret(files[names[1]]), _secret(files[names[2]])
    assert (rootca["name"], everything["name"]) == ("ROOTCA", "ALL")
    own = _validator_domains(rootca)
    assert list(own) == [exp.trust_domain]
    all_domains = _validator_domains(everything)
    assert all_domains == {exp.trust_domain: own[exp.trust_domain], exp.federated: [exp.fed_root]}
    assert mode(run / "envoy" / names[0]) == 0o600
    return check_chain(chain, own[exp.trust_domain], exp, work / "envoy")


def check_pkcs12(run: Path, exp: Expected, work: Path) -> int:
    files = read_current(run / "pkcs12", ["svid.p12", "svid_bundle.p12"])
    keystore = work / "p12" / "svid.p12"
    keystore.parent.mkdir(parents=True, exist_ok=True)
    keystore.write_bytes(files["svid.p12"])
    # OpenSSL opens the keystore with the password and finds the key and the chain
    out = subprocess.run(
        ["openssl", "pkcs12", "-in", str(keystore), "-passin", f"pass:{PASSWORD}", "-noenc"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    key = serialization.load_pem_private_key(out, None)
    chain = pem_certs(out)
    assert key_matches(key, chain[0])
    store = pkcs12.load_pkcs12(files["svid_bundle.p12"], PASSWORD.encode())
    assert store.key is None and store.cert is None
    roots = [c.certificate for c in store.additional_certs]
    assert (mode(run / "pkcs12" / "svid.p12"), mode(run / "pkcs12" / "svid_bundle.p12")) == (0o600, 0o644)
    return check_chain(chain, roots, exp, work / "p12")


def check_der(run: Path, exp: Expected, work: Path) -> int:
    names = ["svid.der", "svid_chain.der", "key.p8", "svid_bundle.der", f"federated/{exp.federated}.der"]
    files = read_current(run / "der", names)
    chain = [x509.load_der_x509_certificate(d) for d in split_der(files["svid_chain.der"])]
    assert der_of(chain[0]) == files["svid.der"]
    key = serialization.load_der_private_key(files["key.p8"], None)
    assert key_matches(key, chain[0])
    roots = [x509.load_der_x509_certificate(d) for d in split_der(files["svid_bundle.der"])]
    assert files[names[4]] == der_of(exp.fed_root)
    assert mode(run / "der" / "key.p8") == 0o600
    return check_chain(chain, roots, exp, work / "der")


def check_linkerd(run: Path, exp: Expected) -> None:
    files = read_current(run / "linkerd", ["linkerd.env", "trust_anchors.pem"])
    env_file = run / "linkerd.env.pinned"
    env_file.write_bytes(files["linkerd.env"])
    names = [
        "LINKERD2_PROXY_IDENTITY_SERVER_ID",
        "LINKERD2_PROXY_IDENTITY_SERVER_NAME",
        "LINKERD2_PROXY_IDENTITY_SPIRE_WORKLOAD_API_ADDRESS",
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
    ]
    script = '. "$1"; printf "%s\\0" ' + " ".join(f'"${n}"' for n in names)
    out = subprocess.run(
        ["bash", "-c", script, "_", str(env_file)], capture_output=True, check=True, timeout=30
    ).stdout
    values = dict(zip(names, out.split(b"\0")[:-1], strict=True))
    assert values[names[0]].decode() == exp.web
    assert values[names[1]].decode() == SERVER_NAME
    assert values[names[2]].decode().removeprefix("unix://") == str(exp.address)
    assert pem_certs(values[names[3]]) == exp.own_roots
    assert values[names[3]] == files["trust_anchors.pem"]


def check_jwt(run: Path, spire: SpireDeployment, exp: Expected) -> None:
    d = run / "pem"
    token = (d / "web.token").read_text()
    assert mode(d / "web.token") == 0o600 and mode(d / "jwt_bundle.json") == 0o600
    with WorkloadClient(spire.workload_api_address, timeout=15) as client:
        validated = client.validate_jwt_svid(token, AUDIENCE)  # the agent says it is its token
    assert str(validated.spiffe_id) == exp.web
    assert validated.audience == (AUDIENCE, "second")
    written = json.loads((d / "jwt_bundle.json").read_bytes())
    assert list(written) == sorted([exp.trust_domain, exp.federated])
    with WorkloadApiClient(socket_path=spire.workload_api_address, default_timeout=15) as theirs:
        bundles = theirs.fetch_jwt_bundles()
    for td, b64 in written.items():
        jwks = json.loads(base64.b64decode(b64))
        agent_bundle = bundles.get_bundle_for_trust_domain(PyTrustDomain(td))
        assert agent_bundle is not None
        assert {k["kid"] for k in jwks["keys"]} == set(agent_bundle.jwt_authorities)


def check_everything(run: Path, spire: SpireDeployment, work: Path) -> dict[str, int]:
    """Verify every output; return the leaf serial each SVID directory holds."""
    exp = Expected(spire)
    serials = {
        "pem": check_pem(run, exp, work),
        "pem-linked": check_pem_linked(run, exp, work),
        "combined": check_combined(run, exp, work),
        "envoy": check_envoy(run, exp, work),
        "pkcs12": check_pkcs12(run, exp, work),
        "der": check_der(run, exp, work),
    }
    check_linkerd(run, exp)
    check_jwt(run, spire, exp)
    for name in LINKED:
        assert (run / name / "..data").is_symlink(), name  # outputs default to the symlink layout
    assert not (run / "pem" / "..data").exists()  # cert_dir keeps spiffe-helper's flat files
    return serials


def leaf_serials(run: Path) -> dict[str, int]:
    """The leaf serial of every SVID directory, read quickly (for waiting on a rotation)."""
    out = {"pem": pem_certs((run / "pem" / "svid.pem").read_bytes())[0].serial_number}
    for name, file in (("pem-linked", "svid.pem"), ("combined", "svid_combined.pem")):
        out[name] = pem_certs(read_current(run / name, [file])[file])[0].serial_number
    cert = _secret(read_current(run / "envoy", ["sds_tls_certificate.json"])["sds_tls_certificate.json"])
    out["envoy"] = pem_certs(cert["tls_certificate"]["certificate_chain"]["inline_string"].encode())[
        0
    ].serial_number
    p12 = pkcs12.load_pkcs12(read_current(run / "pkcs12", ["svid.p12"])["svid.p12"], PASSWORD.encode())
    assert p12.cert is not None
    out["pkcs12"] = p12.cert.certificate.serial_number
    out["der"] = x509.load_der_x509_certificate(
        read_current(run / "der", ["svid.der"])["svid.der"]
    ).serial_number
    return out


def stable_state(run: Path, spire: SpireDeployment, work: Path) -> tuple[dict[str, int], dict[str, str], int]:
    """Verify everything while no rotation lands: (serials, ..data targets, flat svid.pem inode).

    SPIRE rotates these 30 s SVIDs every ~10 s; a rotation during the checks is retried.
    """
    for _ in range(3):
        before = wait_for(lambda: (s := leaf_serials(run)) and len(set(s.values())) == 1 and s, "one SVID")
        links = {name: os.readlink(run / name / "..data") for name in LINKED}
        inode = (run / "pem" / "svid.pem").stat().st_ino
        checked = check_everything(run, spire, work)
        if checked == before == leaf_serials(run):
            return checked, links, inode
    raise AssertionError("a rotation landed during every one of three checks")


def test_one_shot_writes_every_format(spire: SpireDeployment, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "helper.conf").write_text(config(spire))
    env = {"SPIFFE_BRIDGE_PKCS12_PASSWORD": PASSWORD}
    for _ in range(3):
        with sidecar(["-config", "helper.conf", "-daemon-mode=false"], run, env) as proc:
            assert proc.wait(60) == 0, proc.log
        serials = check_everything(run, spire, tmp_path / "work")
        if len(set(serials.values())) == 1:
            break  # one-shot fetches once: every format holds the same SVID
    else:
        raise AssertionError(f"formats disagree on the SVID: {serials}")
    assert "PRIVATE KEY" not in proc.log and "BEGIN CERTIFICATE" not in proc.log


def test_daemon_writes_every_format_and_follows_rotation(spire: SpireDeployment, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    health = Health()
    (run / "helper.conf").write_text(config(spire, health.hcl))
    env = {"SPIFFE_BRIDGE_PKCS12_PASSWORD": PASSWORD}
    with sidecar(["-config", "helper.conf"], run, env) as proc:
        wait_for(lambda: proc.alive() and health.ready(), "sidecar ready")
        first, data_links, flat_inode = stable_state(run, spire, tmp_path / "work-1")

        old = set(first.values())
        wait_for(
            lambda: (s := leaf_serials(run)) and len(set(s.values())) == 1 and not old & set(s.values()),
            "every format holding the rotated SVID",
            timeout=spire.svid_ttl / 2 + 15,
        )
        rotated, links_now, _ = stable_state(run, spire, tmp_path / "work-2")
        assert not old & set(rotated.values())
        # symlink outputs switched version as a whole; the flat file was replaced, not rewritten
        for name in SVID_DIRS[1:]:
            assert links_now[name] != data_links[name], name
        # linkerd's files (SPIFFE ID and roots) did not change: not rewritten
        assert links_now["linkerd"] == data_links["linkerd"]
        assert (run / "pem" / "svid.pem").stat().st_ino != flat_inode
        # the status counts a rotation once its reload action ran, just after the files switched
        wait_for(lambda: health.body()["rotations"]["x509"] >= 2, "the rotation counted in health")
        body = health.body()
        assert body["write_failures"] == 0
        assert body["streams"]["x509"]["reconnects"] == 0
        assert proc.stop() == 0, proc.log
    assert "PRIVATE KEY" not in proc.log and "BEGIN CERTIFICATE" not in proc.log
