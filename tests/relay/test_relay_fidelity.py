"""Through the relay, clients see exactly what the agent serves (same DER bytes), from one upstream stream."""

from __future__ import annotations

import datetime as dt
import queue
from typing import Any

import grpc
import pytest
from _support.wire import HEADER
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from relay_helpers import STREAMS, RawStream, RelayFactory, raw_method
from spiffe import WorkloadApiClient
from spiffe import X509Source as PyX509Source

from spiffe_bridge.client.sync import WorkloadClient
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.relay import Kind, Relay

WEB = "spiffe://example.org/web"
DB = "spiffe://example.org/db"
IDENTITIES = [f"{WEB}#web", f"{DB}#db"]
RICH = pytest.mark.dev_agent(identities=IDENTITIES, intermediate=True, federate_with=["partner.test"])


def _pyspiffe_material(address: str) -> list[tuple[str, list[bytes], bytes]]:
    with WorkloadApiClient(address) as client:
        context = client.fetch_x509_context()
    out = []
    for svid in context.x509_svids:
        chain = [c.public_bytes(serialization.Encoding.DER) for c in svid.cert_chain]
        key = svid.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        out.append((str(svid.spiffe_id), chain, key))
    return out


def _crl_der() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay test CRL")])
    builder = x509.CertificateRevocationListBuilder().issuer_name(issuer)
    crl = builder.last_update(now).next_update(now + dt.timedelta(hours=1)).sign(key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER)


def _first(address: str, method: str) -> Any:
    request, parse = STREAMS[method]
    with grpc.insecure_channel(address.replace("unix://", "unix:")) as channel:
        call = raw_method(channel, method, True)(request.SerializeToString(), metadata=HEADER, timeout=10)
        message = parse(next(call))
        call.cancel()
        return message


@RICH
def test_pyspiffe_sees_the_agents_svids(dev_agent: DevAgent, relay: Relay) -> None:
    via_relay = _pyspiffe_material(relay.address)
    direct = _pyspiffe_material(dev_agent.address)
    assert via_relay == direct
    assert [sid for sid, _, _ in via_relay] == [WEB, DB]
    assert len(via_relay[0][1]) == 2  # leaf + intermediate, as the agent sent them


@RICH
def test_our_client_sees_the_same_bytes(dev_agent: DevAgent, relay: Relay) -> None:
    with WorkloadClient(relay.address) as through, WorkloadClient(dev_agent.address) as direct:
        a, b = through.fetch_x509_context(), direct.fetch_x509_context()
        assert [(s.spiffe_id, s.hint, s.chain_der, s.key_der) for s in a.svids] == [
            (s.spiffe_id, s.hint, s.chain_der, s.key_der) for s in b.svids
        ]
        assert a.bundles == b.bundles and a.federated == b.federated
        assert through.fetch_x509_bundles().bundles == direct.fetch_x509_bundles().bundles
        assert {td: x.jwks for td, x in through.fetch_jwt_bundles().bundles.items()} == {
            td: x.jwks for td, x in direct.fetch_jwt_bundles().bundles.items()
        }


@RICH
def test_wire_fields_are_the_agents_bytes(dev_agent: DevAgent, relay_factory: RelayFactory) -> None:
    dev_agent.set_crls([_crl_der()])
    relay = relay_factory(dev_agent.address)
    for kind in Kind:
        relay.wait_serving(kind)
    for method in STREAMS:
        via_relay = _first(relay.address, method)
        direct = _first(dev_agent.address, method)
        if method == "FetchX509SVID":
            fields = ("spiffe_id", "x509_svid", "x509_svid_key", "bundle", "hint")
            assert [[getattr(s, f) for f in fields] for s in via_relay.svids] == [
                [getattr(s, f) for f in fields] for s in direct.svids
            ]
            assert dict(via_relay.federated_bundles) == dict(direct.federated_bundles)
        else:
            assert dict(via_relay.bundles) == dict(direct.bundles)
        if method != "FetchJWTBundles":
            assert list(via_relay.crl) == list(direct.crl) != []


def test_pyspiffe_source_follows_rotation_through_relay(dev_agent: DevAgent, relay: Relay) -> None:
    seen: queue.Queue[int] = queue.Queue()
    source = PyX509Source(socket_path=relay.address, timeout_in_seconds=10)
    try:
        source.subscribe_for_updates(
            lambda: seen.put(source.get_x509_context().default_svid.leaf.serial_number)
        )
        assert source.get_x509_context().default_svid.leaf.serial_number == dev_agent.svids[0].serial_number
        (rotated,) = dev_agent.rotate()
        while seen.get(timeout=10) != rotated.serial_number:
            pass
        svid = source.get_x509_context().default_svid
        assert svid.private_key.public_key() == rotated.leaf.public_key()
    finally:
        source.close()
    assert dev_agent.streams_opened("FetchX509SVID") == 1  # the relay's one upstream stream


def test_one_upstream_stream_per_kind(dev_agent: DevAgent, relay: Relay, streams: list[RawStream]) -> None:
    target = "unix:" + relay.socket_path
    for method in STREAMS:
        for _ in range(5):
            streams.append(RawStream(target, method))
    for stream in streams:
        stream.next()
    for method in STREAMS:
        assert dev_agent.open_streams(method) == 1
        assert dev_agent.streams_opened(method) == 1
