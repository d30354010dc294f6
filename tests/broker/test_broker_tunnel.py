"""The Broker API client's pieces without SPIRE: references, agent authorizers, the TLS tunnel.

The tunnel is exercised against a TLS server run with a dev agent's SVIDs: one
that is the authorized agent (bytes flow, ALPN h2) and one that is not (refused,
nothing flows). The real agent is in tests/interop/test_broker_interop.py.
"""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest

from spiffe_bridge.address import parse
from spiffe_bridge.broker import KubernetesObjectReference, TlsTunnel, WorkloadPIDReference, agent_authorizer
from spiffe_bridge.broker._core import broker_ssl_context, resolve
from spiffe_bridge.broker.reference import as_reference
from spiffe_bridge.broker.sync import BrokerClient
from spiffe_bridge.devagent import DevAgent, Identity
from spiffe_bridge.devagent.pytest_plugin import DevAgentFactory
from spiffe_bridge.errors import AddressError, BrokerTlsError
from spiffe_bridge.sources import X509Source
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain
from spiffe_bridge.tls import PeerNotAuthorizedError, authorize_any, server_ssl_context
from spiffe_bridge.tls.authorize import AuthorizeMemberOf, AuthorizeOneOf

AGENT_ID = "spiffe://example.org/spire/agent/x"
BROKER_ID = "spiffe://example.org/node-bridge"


# -- references and configuration ---------------------------------------------------------


def test_pid_reference_is_packed_and_checked() -> None:
    ref = as_reference(1234)
    assert ref == WorkloadPIDReference(1234) and str(ref) == "pid 1234"
    assert ref.message().reference.type_url == "type.googleapis.com/spiffe.broker.WorkloadPIDReference"
    for bad in (0, -1, 2**31, True, "12"):
        with pytest.raises(ValueError, match="PID"):
            WorkloadPIDReference(bad)  # type: ignore[arg-type]


def test_kubernetes_reference() -> None:
    ref = KubernetesObjectReference("pods", "core", uid="a1b2")
    any_ = ref.message().reference
    assert any_.type_url == "type.googleapis.com/spiffe.broker.KubernetesObjectReference"
    from spiffe_bridge._proto import brokerapi_pb2 as bpb

    obj = bpb.KubernetesObjectReference()
    assert any_.Unpack(obj)
    assert (obj.type.plural, obj.type.group, obj.uid, obj.HasField("key")) == ("pods", "core", "a1b2", False)
    named = KubernetesObjectReference("deployments", "apps", name="web", namespace="shop")
    assert any_.Unpack(obj) and str(named) == "deployments.apps shop/web"
    with pytest.raises(ValueError, match="name, a UID"):
        KubernetesObjectReference("pods", "core")
    with pytest.raises(ValueError, match="plural and group"):
        KubernetesObjectReference("", "core", uid="x")


def test_agent_authorizer_forms() -> None:
    assert isinstance(agent_authorizer(AGENT_ID), AuthorizeOneOf)
    assert isinstance(agent_authorizer(SpiffeId.parse(AGENT_ID)), AuthorizeOneOf)
    for td in ("spiffe://example.org", "example.org", TrustDomain.parse("example.org")):
        rule = agent_authorizer(td)
        assert isinstance(rule, AuthorizeMemberOf)
        rule(SpiffeId.parse(AGENT_ID))
        with pytest.raises(PeerNotAuthorizedError):
            rule(SpiffeId.parse("spiffe://evil.org/spire/agent/x"))
    with pytest.raises(PeerNotAuthorizedError):
        agent_authorizer(AGENT_ID)(SpiffeId.parse("spiffe://example.org/spire/agent/y"))
    any_rule = authorize_any()
    assert agent_authorizer(any_rule) is any_rule


def test_address_falls_back_to_the_broker_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPIFFE_BROKER_SOCKET", raising=False)
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", "unix:///run/workload.sock")
    with pytest.raises(AddressError, match="SPIFFE_BROKER_SOCKET"):
        resolve(None)
    monkeypatch.setenv("SPIFFE_BROKER_SOCKET", "unix:///run/broker.sock")
    assert resolve(None).path == "/run/broker.sock"
    assert resolve("tcp://127.0.0.1:8443").port == 8443


# -- the tunnel ---------------------------------------------------------------------------------


@pytest.fixture
def agent(dev_agent_factory: DevAgentFactory) -> DevAgent:
    """A dev agent for example.org serving the 'agent' SVID (for the fake endpoint) and the broker's."""
    return dev_agent_factory(
        identities=[Identity(AGENT_ID, hint="agent"), Identity(BROKER_ID, hint="broker")]
    )


@pytest.fixture
def source(agent: DevAgent) -> Iterator[X509Source]:
    with X509Source(agent.address, timeout=10) as src:
        yield src


class FakeEndpoint:
    """A TLS echo server on a Unix socket presenting the 'agent' SVID and requiring a client SVID."""

    def __init__(self, source: X509Source) -> None:
        self.dir = tempfile.mkdtemp(prefix="sbt-", dir="/tmp")
        self.path = os.path.join(self.dir, "broker.sock")
        self.context = server_ssl_context(source, authorize_any(), svid_hint="agent")
        self.context.set_alpn_protocols(["h2"])
        self.alpn: list[str | None] = []
        self.clients: list[str] = []

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        self.alpn.append(ssl_object.selected_alpn_protocol())
        from spiffe_bridge.tls import peer_spiffe_id

        self.clients.append(str(peer_spiffe_id(writer)))
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def start(self) -> asyncio.Server:
        return await asyncio.start_unix_server(self._echo, path=self.path, ssl=self.context)


@pytest.fixture
async def endpoint(source: X509Source) -> AsyncIterator[FakeEndpoint]:
    fake = FakeEndpoint(source)
    server = await fake.start()
    try:
        yield fake
    finally:
        server.close()
        fake.context.close()


async def _roundtrip(path: str, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(1024), 10)
    writer.close()
    return data


async def test_tunnel_pipes_to_the_authorized_agent(source: X509Source, endpoint: FakeEndpoint) -> None:
    context = broker_ssl_context(source, AGENT_ID, BROKER_ID, None)
    tunnel = TlsTunnel(parse("unix://" + endpoint.path), context)
    await tunnel.start()
    try:
        # a private socket in a private directory
        assert stat.S_IMODE(os.stat(os.path.dirname(tunnel.path)).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(tunnel.path).st_mode) == 0o600
        assert await _roundtrip(tunnel.path, b"PRI * HTTP/2.0") == b"PRI * HTTP/2.0"
        assert str(tunnel.peer) == AGENT_ID and tunnel.last_error is None
        assert endpoint.alpn == ["h2"] and endpoint.clients == [BROKER_ID]
    finally:
        await tunnel.close()
        context.close()
    assert tunnel._dir is None


async def test_tunnel_refuses_an_endpoint_that_is_not_the_agent(
    source: X509Source, endpoint: FakeEndpoint
) -> None:
    errors: list[Exception] = []
    context = broker_ssl_context(source, "spiffe://example.org/spire/agent/other", BROKER_ID, None)
    tunnel = TlsTunnel(parse("unix://" + endpoint.path), context, on_error=errors.append)
    await tunnel.start()
    try:
        assert await _roundtrip(tunnel.path, b"secret request") == b""  # closed, nothing forwarded
        assert isinstance(tunnel.last_error, PeerNotAuthorizedError)
        assert str(tunnel.last_error.peer_id) == AGENT_ID
        assert errors == [tunnel.last_error] and tunnel.peer is None
        assert endpoint.clients == []  # the endpoint never got a request
    finally:
        await tunnel.close()
        context.close()


async def test_client_names_the_refused_agent(source: X509Source, endpoint: FakeEndpoint) -> None:
    """The blocking client's call fails with BrokerTlsError saying who was refused and why."""

    def fetch() -> tuple[BrokerTlsError, Exception | None]:
        with BrokerClient(
            "unix://" + endpoint.path, source, agent="spiffe://other.org", spiffe_id=BROKER_ID, timeout=3
        ) as client:
            with pytest.raises(BrokerTlsError, match="is not the authorized agent") as info:
                client.fetch_x509_context(os.getpid())
            return info.value, client._link.tunnel.last_error

    error, cause = await asyncio.to_thread(fetch)  # the fake endpoint runs on this loop
    assert AGENT_ID in str(error)
    assert isinstance(cause, PeerNotAuthorizedError)
