"""py-spiffe (the third-party client, unchanged) talks to the dev agent like to SPIRE."""

from __future__ import annotations

import pytest
from devagent_helpers import Collector
from spiffe import JwtBundleSet, JwtSvid, SpiffeId, TrustDomain, WorkloadApiClient, X509Source
from spiffe.workloadapi.errors import FetchJwtSvidError, FetchX509SvidError, ValidateJwtSvidError

from spiffe_bridge.devagent.server import DevAgent

WEB = "spiffe://example.org/web"
DB = "spiffe://example.org/db"


@pytest.mark.dev_agent(identities=[f"{WEB}#web", f"{DB}#db"], federate_with=["partner.test"])
def test_fetch_x509_context_and_bundles(dev_agent: DevAgent) -> None:
    with WorkloadApiClient(dev_agent.address) as client:
        ctx = client.fetch_x509_context()
        assert [str(s.spiffe_id) for s in ctx.x509_svids] == [WEB, DB]
        assert str(ctx.default_svid.spiffe_id) == WEB
        assert ctx.default_svid.leaf.serial_number == dev_agent.svids[0].serial_number
        own = ctx.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain("example.org"))
        fed = ctx.x509_bundle_set.get_bundle_for_trust_domain(TrustDomain("partner.test"))
        assert own is not None and fed is not None
        partner = dev_agent.federated_trust_domains["partner.test"]
        assert {c.serial_number for c in fed.x509_authorities} == {partner.roots[0].serial_number}

        bundles = client.fetch_x509_bundles()
        names = {str(b.trust_domain) for b in bundles._bundles.values()}
        assert names == {"example.org", "partner.test"}


@pytest.mark.dev_agent(intermediate=True)
def test_x509_svid_chain_includes_intermediate(dev_agent: DevAgent) -> None:
    with WorkloadApiClient(dev_agent.address) as client:
        svid = client.fetch_x509_svid()
    assert len(svid.cert_chain) == 2
    assert svid.cert_chain[1].serial_number == dev_agent.ca.intermediates[0].serial_number


@pytest.mark.dev_agent(identities=[WEB, DB], federate_with=["partner.test"])
def test_jwt_svids_bundles_and_validation(dev_agent: DevAgent) -> None:
    with WorkloadApiClient(dev_agent.address) as client:
        svid = client.fetch_jwt_svid({"svc"})
        assert str(svid.spiffe_id) == WEB and svid.audience == {"svc"}
        db = client.fetch_jwt_svid({"svc", "other"}, subject=SpiffeId(DB))
        assert str(db.spiffe_id) == DB

        bundles = client.fetch_jwt_bundles()
        own = bundles.get_bundle_for_trust_domain(TrustDomain("example.org"))
        assert own is not None
        assert set(own.jwt_authorities) == {a.kid for a in dev_agent.ca.jwt_authorities}
        assert bundles.get_bundle_for_trust_domain(TrustDomain("partner.test")) is not None
        local = JwtSvid.parse_and_validate(db.token, own, {"other"})
        assert str(local.spiffe_id) == DB

        remote = client.validate_jwt_svid(svid.token, "svc")
        assert str(remote.spiffe_id) == WEB
        with pytest.raises(ValidateJwtSvidError):
            client.validate_jwt_svid(svid.token, "not-the-audience")


def test_x509_source_receives_rotation(dev_agent: DevAgent) -> None:
    updates: Collector[int] = Collector()
    with X509Source(socket_path=dev_agent.address, timeout_in_seconds=10) as source:
        source.subscribe_for_updates(
            lambda: updates.add(source.get_x509_context().default_svid.leaf.serial_number)
        )
        first = source.get_x509_context().default_svid.leaf.serial_number
        assert first == dev_agent.svids[0].serial_number
        (rotated,) = dev_agent.rotate()
        updates.wait_for(lambda serials: rotated.serial_number in serials)
        assert source.get_x509_context().default_svid.leaf.serial_number == rotated.serial_number != first
        assert source.get_x509_context().default_svid.private_key.public_key() == rotated.leaf.public_key()
    assert dev_agent.streams_opened("FetchX509SVID") == 1  # pushed on the open stream


def test_x509_source_reconnects_after_restart(dev_agent: DevAgent) -> None:
    updates: Collector[int] = Collector()
    with X509Source(socket_path=dev_agent.address, timeout_in_seconds=10) as source:
        source.subscribe_for_updates(
            lambda: updates.add(source.get_x509_context().default_svid.leaf.serial_number)
        )
        dev_agent.restart()
        dev_agent.wait_for_streams_opened("FetchX509SVID", 2)
        rotated = dev_agent.rotate()[0].serial_number
        updates.wait_for(lambda serials: rotated in serials)


def test_jwt_bundle_rotation_is_streamed(dev_agent: DevAgent) -> None:
    seen: Collector[JwtBundleSet] = Collector()
    errors: Collector[Exception] = Collector()
    with WorkloadApiClient(dev_agent.address) as client:
        handle = client.stream_jwt_bundles(seen.add, errors.add)
        try:
            seen.wait_count(1)
            new_kid = dev_agent.rotate_jwt_bundle()
            latest = seen.wait_count(2)[-1]
        finally:
            handle.cancel()
    bundle = latest.get_bundle_for_trust_domain(TrustDomain("example.org"))
    assert bundle is not None and new_kid in bundle.jwt_authorities
    assert len(bundle.jwt_authorities) == 2  # previous key kept for overlap
    assert errors.items == []


def test_permission_denied_window_then_identity(dev_agent: DevAgent) -> None:
    dev_agent.deny()
    with WorkloadApiClient(dev_agent.address) as client:
        with pytest.raises(FetchX509SvidError, match="PERMISSION_DENIED"):
            client.fetch_x509_context()
        with pytest.raises(FetchJwtSvidError, match="PERMISSION_DENIED"):
            client.fetch_jwt_svid({"svc"})
        dev_agent.allow()
        assert client.fetch_x509_context().default_svid is not None


def test_x509_source_waits_out_a_timed_permission_denied_window(dev_agent: DevAgent) -> None:
    dev_agent.deny(0.5)
    with X509Source(socket_path=dev_agent.address, timeout_in_seconds=15) as source:
        assert source.get_x509_context().default_svid.leaf.serial_number == dev_agent.svids[0].serial_number
    assert dev_agent.calls("FetchX509SVID") >= 2  # first attempt(s) were denied, then retried
    assert not dev_agent.denied


def test_malformed_unary_answer_surfaces_in_client(dev_agent: DevAgent) -> None:
    from spiffe_bridge._proto import workload_pb2 as pb

    dev_agent.respond_next_with("FetchJWTSVID", pb.JWTSVIDResponse())
    with WorkloadApiClient(dev_agent.address) as client:
        with pytest.raises(FetchJwtSvidError, match="empty"):
            client.fetch_jwt_svid({"svc"})
        assert str(client.fetch_jwt_svid({"svc"}).spiffe_id) == "spiffe://example.org/workload"
