"""Smoke tests: the real SPIRE fixture works, checked with py-spiffe (not our client)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from spiffe import SpiffeId, TrustDomain, WorkloadApiClient
from spiffe.workloadapi.x509_context import X509Context
from spire import EntrySpec, SpireDeployment


def _leaf_serials(ctx: X509Context) -> dict[str, int]:
    return {str(s.spiffe_id): s.leaf.serial_number for s in ctx.x509_svids}


def test_x509_context_has_every_registered_svid(spire: SpireDeployment) -> None:
    with WorkloadApiClient(socket_path=spire.workload_api_address, default_timeout=10) as client:
        ctx = client.fetch_x509_context()

    assert {str(s.spiffe_id) for s in ctx.x509_svids} == spire.expected_spiffe_ids
    assert len(spire.expected_spiffe_ids) >= 3

    now = dt.datetime.now(dt.UTC)
    for svid in ctx.x509_svids:
        remaining = (svid.leaf.not_valid_after_utc - now).total_seconds()
        assert 0 < remaining <= spire.svid_ttl + 5, "entry -x509SVIDTTL not applied"

    own = ctx.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(spire.trust_domain))
    assert own is not None and own.x509_authorities
    # the federated bundle is served because one entry federates with it
    assert spire.federated_ca is not None
    fed = ctx.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain(spire.federated_trust_domain))
    assert fed is not None
    assert {c.serial_number for c in fed.x509_authorities} == {spire.federated_ca.cert.serial_number}


def test_hints_and_federation_as_spire_reports_them(spire: SpireDeployment) -> None:
    resp = spire.fetch_x509()
    by_id = {s["spiffe_id"]: s for s in resp["svids"]}
    assert {e.spiffe_id: e.hint for e in spire.entries} == {k: v.get("hint", "") for k, v in by_id.items()}
    # the response-level federated bundles carry the federated CA, keyed by trust domain ID
    assert spire.federated_ca is not None
    fed = resp.get("federated_bundles") or {}
    assert set(fed) == {f"spiffe://{spire.federated_trust_domain}"}
    assert base64.b64decode(fed[f"spiffe://{spire.federated_trust_domain}"]) == spire.federated_ca.cert_der


def test_jwt_bundles_include_own_and_federated_domain(spire: SpireDeployment) -> None:
    with WorkloadApiClient(socket_path=spire.workload_api_address, default_timeout=10) as client:
        bundles = client.fetch_jwt_bundles()
        web = spire.spiffe_id("/workload/web")

        jwt = client.fetch_jwt_svid(audience={"spiffe-bridge-test"}, subject=SpiffeId(web))

    own = bundles.get_bundle_for_trust_domain(TrustDomain(spire.trust_domain))
    assert own is not None and own.jwt_authorities
    fed = bundles.get_bundle_for_trust_domain(TrustDomain(spire.federated_trust_domain))
    assert fed is not None
    assert spire.federated_ca is not None
    assert set(fed.jwt_authorities) == {spire.federated_ca.jwt_kid}
    assert str(jwt.spiffe_id) == web
    assert jwt.audience == {"spiffe-bridge-test"}


def test_rotation_is_pushed_on_the_stream(spire: SpireDeployment) -> None:
    """SPIRE rotates at half the X.509-SVID TTL and pushes the new context."""
    cond = threading.Condition()
    first: dict[str, int] = {}
    rotated: set[str] = set()
    errors: list[Exception] = []

    def on_success(ctx: X509Context) -> None:
        with cond:
            serials = _leaf_serials(ctx)
            if not first:
                first.update(serials)
            for sid, serial in serials.items():
                if sid in first and serial != first[sid]:
                    rotated.add(sid)
            cond.notify_all()

    def on_error(exc: Exception) -> None:
        with cond:
            errors.append(exc)
            cond.notify_all()

    client = WorkloadApiClient(socket_path=spire.workload_api_address)
    handle = client.stream_x509_contexts(on_success, on_error)
    try:
        with cond:
            assert cond.wait_for(lambda: first or errors, timeout=15), "no first X.509 context"
            assert not errors, errors
            assert set(first) == spire.expected_spiffe_ids
            # half life plus a few sync intervals
            ok = cond.wait_for(lambda: rotated == set(first) or errors, timeout=spire.svid_ttl / 2 + 15)
            assert not errors, errors
            assert ok, f"only {sorted(rotated)} rotated within the deadline"
    finally:
        handle.cancel()
        client.close()


def test_entry_create_and_delete_reach_the_workload_api(spire: SpireDeployment) -> None:
    extra = spire.create_entry("/workload/extra", hint="extra")
    resp = spire.wait_for_svids(timeout=20)
    assert extra.spiffe_id in {s["spiffe_id"] for s in resp["svids"]}
    spire.delete_entry(extra)
    resp = spire.wait_for_svids(timeout=20)
    assert extra.spiffe_id not in {s["spiffe_id"] for s in resp["svids"]}


def test_agent_kill_and_restart(spire: SpireDeployment) -> None:
    spire.kill_agent()
    assert not spire.agent.running
    spire.start_agent()
    assert spire.agent.healthy()
    assert spire.agent.http_health("/ready") == 200


@pytest.mark.parametrize("path", ["/live", "/ready"])
def test_agent_health_listener(spire: SpireDeployment, path: str) -> None:
    assert spire.agent.http_health(path) == 200


def test_spire_factory_gives_an_isolated_deployment(
    spire: SpireDeployment, spire_factory: Callable[..., SpireDeployment]
) -> None:
    other = spire_factory(
        trust_domain="other.test", federated_trust_domain=None, entries=[EntrySpec("/solo")]
    )
    assert other.socket_path != spire.socket_path
    assert len(str(other.socket_path)) < 100
    with WorkloadApiClient(socket_path=other.workload_api_address, default_timeout=10) as client:
        ctx = client.fetch_x509_context()
    assert [str(s.spiffe_id) for s in ctx.x509_svids] == ["spiffe://other.test/solo"]
    assert {str(b.trust_domain) for b in ctx.x509_bundle_set.bundles} == {"other.test"}


def test_spiffe_helper_one_shot_writes_the_hinted_svid(
    spire: SpireDeployment, spiffe_helper_bin: Path, tmp_path: Path
) -> None:
    out = tmp_path / "certs"
    out.mkdir()
    conf = tmp_path / "helper.conf"
    conf.write_text(
        f"""agent_address = "{spire.socket_path}"
cert_dir = "{out}"
daemon_mode = false
hint = "db"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
jwt_bundle_file_name = "jwt_bundle.json"
"""
    )
    res = subprocess.run(
        [str(spiffe_helper_bin), "-config", str(conf)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    leaf = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())[0]
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [spire.spiffe_id("/workload/db")]
    assert x509.load_pem_x509_certificates((out / "svid_bundle.pem").read_bytes())
    jwt_bundles = json.loads((out / "jwt_bundle.json").read_text())
    assert spire.trust_domain in jwt_bundles
