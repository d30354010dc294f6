"""``spiffe-bridge inspect PATH``: every format our writers produce is recognised and checked,
and real breakage (modes, mixed keys, foreign bundles, expiry) is named with exit status 1."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from _support.pki import der, key_der
from tools_helpers import context, pem_files, run, run_json, write_format, write_spiffe_fs

from spiffe_bridge.formats import X509_FORMATS

SVID_KEYS = {
    "spiffe_id",
    "hint",
    "serial",
    "not_before",
    "not_after",
    "key_type",
    "key_size",
    "dns_names",
    "chain",
}


def failures(doc: Any) -> list[str]:
    return [c["detail"] for p in doc["paths"] for s in p["sets"] for c in s["checks"] if not c["ok"]] + [
        c["detail"] for p in doc["paths"] for c in p["checks"] if not c["ok"]
    ]


@pytest.mark.dev_agent(intermediate=True, federate_with=["partner.example"])
@pytest.mark.parametrize("fmt", X509_FORMATS)
def test_each_written_format_is_detected_and_passes(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    write_format(dev_agent, tmp_path, fmt)
    code, doc = run_json(capsys, "inspect", str(tmp_path))
    assert code == 0, failures(doc)
    (found,) = doc["paths"][0]["sets"]
    assert found["format"] == fmt
    assert "example.org" in found["bundles"]
    if fmt == "bundle-map":  # trust bundles only, every trust domain's
        assert set(found["bundles"]) == {"example.org", "partner.example"} and not found["svids"]
    elif fmt != "linkerd":  # linkerd writes no SVID files, only anchors and the env file
        (svid,) = found["svids"]
        assert set(svid) == SVID_KEYS
        assert svid["spiffe_id"] == "spiffe://example.org/workload"
        assert svid["key_type"] == "EC P-256" and len(svid["chain"]) == 2
        assert {c["check"] for c in found["checks"]} >= {"leaf", "key", "chain", "expiry", "mode"}
    else:
        assert found["env"]["LINKERD2_PROXY_IDENTITY_SERVER_ID"] == "spiffe://example.org/workload"


def test_text_output_has_no_key_material(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_format(dev_agent, tmp_path, "combined")
    code, out, _ = run(capsys, "inspect", str(tmp_path))
    assert code == 0
    assert "format combined" in out and "spiffe://example.org/workload" in out
    assert "PRIVATE KEY" not in out


def test_key_file_readable_by_others_fails_with_the_fix(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_format(dev_agent, tmp_path, "pem")
    os.chmod(os.path.realpath(tmp_path / "svid_key.pem"), 0o644)
    code, doc = run_json(capsys, "inspect", str(tmp_path))
    assert code == 1
    assert any("holds a secret but is mode 0644" in f and "chmod 600" in f for f in failures(doc))


def test_key_from_another_rotation_fails(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = context(dev_agent).default_svid
    dev_agent.rotate()
    new = context(dev_agent)
    bundle = [b for b in new.bundle_for("example.org").authorities_der]  # type: ignore[union-attr]
    pem_files(tmp_path, list(new.default_svid.chain_der), old.key_der, bundle)
    code, doc = run_json(capsys, "inspect", str(tmp_path))
    assert code == 1
    assert any("does NOT match the leaf" in f for f in failures(doc))


def test_bundle_of_another_trust_domain_ca_fails(
    dev_agent_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine, other = dev_agent_factory(), dev_agent_factory()
    svid = context(mine).default_svid
    foreign = list(context(other).bundle_for("example.org").authorities_der)  # type: ignore[union-attr]
    pem_files(tmp_path, list(svid.chain_der), svid.key_der, foreign)
    code, doc = run_json(capsys, "inspect", str(tmp_path))
    assert code == 1
    assert any("does not verify against the bundle of example.org" in f for f in failures(doc))


def test_expired_leaf_from_the_agents_ca_fails(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = dt.datetime.now(dt.UTC)
    leaf, key = dev_agent.ca.forge_leaf(
        uris=["spiffe://example.org/workload"],
        not_before=now - dt.timedelta(hours=2),
        not_after=now - dt.timedelta(hours=1),
    )
    pem_files(tmp_path, [der(leaf)], key_der(key), [dev_agent.ca.bundle_der()])
    code, doc = run_json(capsys, "inspect", str(tmp_path))
    assert code == 1
    assert any(f.startswith("leaf expired at") for f in failures(doc))
    # the key, the chain and the SVID rules are fine: only expiry is named
    assert all("expired" in f for f in failures(doc))


def test_spiffe_fs_folder_is_detected_and_checked(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_spiffe_fs(tmp_path, context(dev_agent))
    code, doc = run_json(capsys, "inspect", str(tmp_path))
    assert code == 0, failures(doc)
    (found,) = doc["paths"][0]["sets"]
    assert found["format"] == "spiffe-fs" and set(found["bundles"]) == {"example.org"}
    single = run_json(capsys, "inspect", str(tmp_path / "credential-bundle.pem"))[1]
    assert single["paths"][0]["sets"][0]["format"] == "spiffe-fs"


def test_spiffe_fs_with_the_key_last_breaks_the_standard(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_spiffe_fs(tmp_path, context(dev_agent), key_first=False)
    code, doc = run_json(capsys, "inspect", str(tmp_path))
    assert code == 1
    assert any("PRIVATE KEY block must come first" in f for f in failures(doc))


def test_pkcs12_with_password(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_format(dev_agent, tmp_path, "pkcs12", pkcs12_password="s3cret")
    code, doc = run_json(capsys, "inspect", str(tmp_path))
    assert code == 1 and any("cannot open the PKCS#12 file" in f for f in failures(doc))
    monkeypatch.setenv("P12_PW", "s3cret")
    code, doc = run_json(capsys, "inspect", "--pkcs12-password-env", "P12_PW", str(tmp_path))
    assert code == 0, failures(doc)
    assert doc["paths"][0]["sets"][0]["svids"][0]["spiffe_id"] == "spiffe://example.org/workload"


def test_jwt_token_and_bundle_files(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys,
        "fetch",
        "jwt",
        "--address",
        dev_agent.address,
        "--audience",
        "db",
        "--write",
        str(tmp_path),
        "--bundles",
    )
    assert code == 0, err
    code, doc = run_json(capsys, "inspect", str(tmp_path))
    assert code == 0, failures(doc)
    (found,) = doc["paths"][0]["sets"]
    assert found["format"] == "jwt"
    (token,) = found["jwt_svids"]
    assert token["spiffe_id"] == "spiffe://example.org/workload" and token["audience"] == ["db"]
    assert any("signature verifies" in c["detail"] for c in found["checks"])
    assert list(found["jwt_bundles"]) == ["example.org"]
    # the old token next to a bundle that no longer has its signing key
    dev_agent.rotate_jwt_bundle(keep_previous=False)
    new = tmp_path / "new"
    assert (
        run(
            capsys,
            "fetch",
            "jwt",
            "--address",
            dev_agent.address,
            "--audience",
            "db",
            "--write",
            str(new),
            "--bundles",
        )[0]
        == 0
    )
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "jwt_svid.token").write_bytes((tmp_path / "jwt_svid.token").read_bytes())
    os.chmod(mixed / "jwt_svid.token", 0o600)
    (mixed / "jwt_bundle.json").write_bytes((new / "jwt_bundle.json").read_bytes())
    code, doc = run_json(capsys, "inspect", str(mixed))
    assert code == 1 and any("is not in the bundle" in f for f in failures(doc))


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("svid.pem", "pem"),
        ("svid_combined.pem", "combined"),
        ("sds_tls_certificate.json", "envoy-sds"),
        ("svid_chain.der", "der"),
        ("linkerd.env", "linkerd"),
        ("svid.p12", "pkcs12"),
    ],
)
def test_single_files_are_recognised_by_content(
    dev_agent: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, fmt: str
) -> None:
    write_format(dev_agent, tmp_path, fmt)
    code, doc = run_json(capsys, "inspect", str(tmp_path / name))
    assert doc["paths"][0]["sets"][0]["format"] == fmt
    assert code == 0, failures(doc)


def test_unrecognised_path_and_missing_path_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    code, doc = run_json(
        capsys, "inspect", str(tmp_path), str(tmp_path / "notes.txt"), str(tmp_path / "gone")
    )
    assert code == 1
    text = " ".join(failures(doc))
    assert "no files that any spiffe-bridge format writes" in text
    assert "not a format spiffe-bridge writes" in text
    assert "No such file" in text


def test_usage_needs_address_or_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "inspect")[0] == 2
