"""A filtered relay shows a downstream only the SVIDs (X.509 and JWT) it is allowed to see."""

from __future__ import annotations

import grpc
import pytest
from relay_helpers import RawStream, RelayFactory
from spiffe import WorkloadApiClient

from spiffe_bridge.client.sync import WorkloadClient
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.errors import NoIdentityError
from spiffe_bridge.relay import SvidFilter

WEB = "spiffe://example.org/web"
DB = "spiffe://example.org/db"
PROXY = "spiffe://example.org/proxy"
THREE = pytest.mark.dev_agent(identities=[f"{WEB}#web", f"{DB}#db", f"{PROXY}#proxy"])


def _ids(address: str) -> list[str]:
    with WorkloadClient(address) as client:
        return [str(s.spiffe_id) for s in client.fetch_x509_context().svids]


@THREE
def test_each_filtered_downstream_sees_only_its_ids(dev_agent: DevAgent, relay_factory: RelayFactory) -> None:
    by_id = relay_factory(dev_agent.address, allow_ids=[PROXY])
    by_hint = relay_factory(dev_agent.address, allow_hints=["db"])
    union = relay_factory(dev_agent.address, allow_ids=[PROXY], allow_hints=["web"])
    everything = relay_factory(dev_agent.address)
    for relay in (by_id, by_hint, union, everything):
        relay.wait_serving()
    assert _ids(by_id.address) == [PROXY]
    assert _ids(by_hint.address) == [DB]
    assert _ids(union.address) == [WEB, PROXY]  # agent order kept; the first allowed is the default
    assert _ids(everything.address) == [WEB, DB, PROXY]
    with WorkloadApiClient(by_id.address) as client:  # the third-party client agrees
        assert [str(s.spiffe_id) for s in client.fetch_x509_context().x509_svids] == [PROXY]


@THREE
def test_filtered_svid_keeps_the_agents_bytes(dev_agent: DevAgent, relay_factory: RelayFactory) -> None:
    relay = relay_factory(dev_agent.address, allow_hints=["proxy"])
    relay.wait_serving()
    stream = RawStream("unix:" + relay.socket_path)
    try:
        (svid,) = stream.next().svids
        proxy = dev_agent.svids[2]
        assert (svid.spiffe_id, svid.hint) == (PROXY, "proxy")
        assert svid.x509_svid == proxy.chain_der() and svid.x509_svid_key == proxy.key_der()
        assert svid.bundle == dev_agent.ca.bundle_der()
        (rotated,) = [m for m in dev_agent.rotate() if m.spiffe_id == PROXY]
        assert stream.next().svids[0].x509_svid == rotated.chain_der()
    finally:
        stream.close()


@THREE
def test_nothing_allowed_is_permission_denied(dev_agent: DevAgent, relay_factory: RelayFactory) -> None:
    relay = relay_factory(dev_agent.address, allow_ids=["spiffe://example.org/other"])
    relay.wait_until(lambda s: s.code is grpc.StatusCode.PERMISSION_DENIED)
    stream = RawStream("unix:" + relay.socket_path)
    try:
        assert stream.status() is grpc.StatusCode.PERMISSION_DENIED
        assert "no identity issued" in stream.details
    finally:
        stream.close()
    dev_agent.add_identity("spiffe://example.org/other")  # now there is one to show
    relay.wait_serving()
    assert _ids(relay.address) == ["spiffe://example.org/other"]


@THREE
def test_jwt_svids_are_filtered_too(dev_agent: DevAgent, relay_factory: RelayFactory) -> None:
    relay = relay_factory(dev_agent.address, allow_ids=[PROXY])
    with WorkloadClient(relay.address) as client:
        svids = client.fetch_jwt_svids("aud")
        assert [str(s.spiffe_id) for s in svids] == [PROXY]
        assert str(client.fetch_jwt_svid("aud", spiffe_id=PROXY).spiffe_id) == PROXY
        with pytest.raises(NoIdentityError):
            client.fetch_jwt_svid("aud", spiffe_id=WEB)


def test_filter_rejects_bad_ids() -> None:
    with pytest.raises(ValueError, match="not-an-id"):
        SvidFilter.of(["not-an-id"])
    with pytest.raises(ValueError, match="hint"):
        SvidFilter.of(hints=[""])
    assert not SvidFilter.of().active
    assert SvidFilter.of([WEB]).allows(WEB) and not SvidFilter.of([WEB]).allows(DB, "web")
    assert SvidFilter.of(hints=["web"]).allows(DB, "web") and not SvidFilter.of(hints=["web"]).allows(DB)
