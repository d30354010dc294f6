"""gRPC mTLS with SPIFFE authorization: real servers and channels on loopback."""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest
from _support.pki import roots_pem
from cryptography import x509
from tls_peers import (
    CLIENT_ID,
    IO_TIMEOUT,
    SERVER_ID,
    Material,
    connect,
    forge,
    material,
    serial_of,
)

from spiffe_bridge import X509Source
from spiffe_bridge.devagent import DevAgent, TrustDomainCA
from spiffe_bridge.tls import (
    AioSpiffeServerInterceptor,
    SpiffeChannel,
    SpiffeServerInterceptor,
    authorize_id,
    client_ssl_context,
    grpc_channel_credentials,
    grpc_peer_spiffe_id,
    grpc_server_credentials,
)

SAY = "/test.Echo/Say"
MANY = "/test.Echo/Many"


@dataclass
class Server:
    port: int
    interceptor: SpiffeServerInterceptor
    client_serials: queue.Queue[int]

    @property
    def target(self) -> str:
        return f"localhost:{self.port}"  # the server SVID carries DNS SAN "localhost"


def _client_serial(context: Any) -> int:
    pem = context.auth_context()["x509_pem_cert"][0]
    return x509.load_pem_x509_certificate(pem).serial_number


@pytest.fixture
def server(source: X509Source) -> Iterator[Server]:
    serials: queue.Queue[int] = queue.Queue()

    def say(request: bytes, context: grpc.ServicerContext) -> bytes:
        serials.put(_client_serial(context))
        return str(grpc_peer_spiffe_id(context)).encode() + b"|" + request

    def many(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(3):
            yield request + str(i).encode()

    interceptor = SpiffeServerInterceptor(source, authorize_id(CLIENT_ID))
    srv = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[interceptor])
    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Many": grpc.unary_stream_rpc_method_handler(many),
    }
    srv.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", handlers)])
    port = srv.add_secure_port("127.0.0.1:0", grpc_server_credentials(source, svid_hint="server"))
    srv.start()
    try:
        yield Server(port, interceptor, serials)
    finally:
        srv.stop(None).wait(IO_TIMEOUT)


def _plain_channel(target: str, mat: Material, trust_pem: bytes) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(trust_pem, mat.key_pem, mat.chain_pem)
    return grpc.secure_channel(target, creds)


def _say(channel: grpc.Channel, data: bytes = b"hi") -> bytes:
    response: bytes = channel.unary_unary(SAY, None, None)(data, timeout=IO_TIMEOUT)
    return response


def test_grpc_mutual_tls_with_authorization(server: Server, source: X509Source) -> None:
    with SpiffeChannel(
        server.target, source, server_trust_domain="example.org", svid_hint="client"
    ) as channel:
        assert _say(channel) == CLIENT_ID.encode() + b"|hi"
        assert list(channel.unary_stream(MANY, None, None)(b"n", timeout=IO_TIMEOUT)) == [b"n0", b"n1", b"n2"]
    assert server.client_serials.get(timeout=IO_TIMEOUT) == source.svid(hint="client").leaf.serial_number


def test_grpc_client_with_another_id_is_denied(server: Server, agent: DevAgent) -> None:
    intruder = material(agent.ca.issue_x509_svid("spiffe://example.org/intruder", ttl=600))
    with _plain_channel(server.target, intruder, roots_pem(agent.ca)) as channel:
        for call in (
            lambda: _say(channel),
            lambda: list(channel.unary_stream(MANY, None, None)(b"n", timeout=IO_TIMEOUT)),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert info.value.details() == (
                f"peer spiffe://example.org/intruder is not authorized: expected {CLIENT_ID}"
            )
    assert server.client_serials.empty()  # the handler never ran


def test_grpc_authorizer_can_be_replaced_at_runtime(server: Server, source: X509Source) -> None:
    with SpiffeChannel(server.target, source, svid_hint="client") as channel:
        assert _say(channel) == CLIENT_ID.encode() + b"|hi"
        server.interceptor.authorizer = authorize_id("spiffe://example.org/other")
        with pytest.raises(grpc.RpcError) as info:
            _say(channel)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_grpc_client_of_untrusted_trust_domain_cannot_connect(server: Server, agent: DevAgent) -> None:
    stranger = material(TrustDomainCA("other.org").issue_x509_svid("spiffe://other.org/client", ttl=600))
    with (
        _plain_channel(server.target, stranger, roots_pem(agent.ca)) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        _say(channel)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_grpc_expired_client_cannot_connect(server: Server, agent: DevAgent) -> None:
    import datetime as dt

    expired = forge(agent.ca, CLIENT_ID, not_after=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    with (
        _plain_channel(server.target, expired, roots_pem(agent.ca)) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        _say(channel)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_grpc_federated_root_cannot_vouch_for_another_trust_domain(
    server: Server, agent: DevAgent, source: X509Source
) -> None:
    partner = agent.add_federated_trust_domain("partner.org")
    source.wait_for(lambda c: c.bundle_for("partner.org") is not None, timeout=IO_TIMEOUT)
    forged = forge(partner, CLIENT_ID)  # gRPC core accepts the chain: partner's root is a client root
    with (
        _plain_channel(server.target, forged, roots_pem(agent.ca)) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        _say(channel)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details() == (
        f"peer SVID {CLIENT_ID}: chain does not verify against the bundle of example.org"
    )


def test_grpc_federated_client_accepted_while_its_bundle_is_present(
    server: Server, agent: DevAgent, source: X509Source
) -> None:
    partner = agent.add_federated_trust_domain("partner.org")
    source.wait_for(lambda c: c.bundle_for("partner.org") is not None, timeout=IO_TIMEOUT)
    server.interceptor.authorizer = authorize_id("spiffe://partner.org/client")
    peer = material(partner.issue_x509_svid("spiffe://partner.org/client", ttl=600))
    with _plain_channel(server.target, peer, roots_pem(agent.ca)) as channel:
        assert _say(channel) == b"spiffe://partner.org/client|hi"
    agent.remove_federated_trust_domain("partner.org")
    source.wait_for(lambda c: c.bundle_for("partner.org") is None, timeout=IO_TIMEOUT)
    with (
        _plain_channel(server.target, peer, roots_pem(agent.ca)) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        _say(channel)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE  # new handshakes no longer trust partner.org


def test_grpc_rotation_reaches_new_connections(server: Server, agent: DevAgent, source: X509Source) -> None:
    probe = client_ssl_context(
        source, authorize_id(SERVER_ID), svid_hint="client", configure=lambda c: c.set_alpn_protocols(["h2"])
    )
    with probe, SpiffeChannel(server.target, source, svid_hint="client", retire_after=None) as channel:
        say = channel.unary_unary(SAY, None, None)  # made once, like a stub's attribute
        assert say(b"a", timeout=IO_TIMEOUT) == CLIENT_ID.encode() + b"|a"
        old_client = server.client_serials.get(timeout=IO_TIMEOUT)
        with connect(probe, server.port) as tls:
            old_server = serial_of(tls.getpeercert(True))

        rotated = {m.hint: m.serial_number for m in agent.rotate()}
        channel.wait_for(lambda c: c.svid(hint="client").leaf.serial_number == rotated["client"])
        probe.wait_for(lambda c: c.svid(hint="client").leaf.serial_number == rotated["client"])

        assert channel.generation == 2
        assert say(b"b", timeout=IO_TIMEOUT) == CLIENT_ID.encode() + b"|b"
        assert server.client_serials.get(timeout=IO_TIMEOUT) == rotated["client"] != old_client
        with connect(probe, server.port) as tls:  # a new handshake: the fetcher hands gRPC the new SVID
            assert serial_of(tls.getpeercert(True)) == rotated["server"] != old_server


def test_grpc_client_trusts_only_the_servers_trust_domain(
    server: Server, agent: DevAgent, source: X509Source
) -> None:
    agent.add_federated_trust_domain("partner.org")
    source.wait_for(lambda c: c.bundle_for("partner.org") is not None, timeout=IO_TIMEOUT)
    with (
        SpiffeChannel(
            server.target, source, server_trust_domain="partner.org", svid_hint="client"
        ) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        _say(channel)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(LookupError, match=r"other\.org"):
        grpc_channel_credentials(source, server_trust_domain="other.org")


@pytest.fixture
async def aio_server(
    source: X509Source,
) -> AsyncIterator[tuple[grpc.aio.Server, int, AioSpiffeServerInterceptor]]:
    async def say(request: bytes, context: Any) -> bytes:
        return str(grpc_peer_spiffe_id(context)).encode() + b"|" + request

    async def many(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for i in range(2):
            yield request + str(i).encode()

    interceptor = AioSpiffeServerInterceptor(source, authorize_id(CLIENT_ID))
    srv = grpc.aio.server(interceptors=[interceptor])
    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Many": grpc.unary_stream_rpc_method_handler(many),
    }
    srv.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", handlers)])
    port = srv.add_secure_port("127.0.0.1:0", grpc_server_credentials(source, svid_hint="server"))
    await srv.start()
    try:
        yield srv, port, interceptor
    finally:
        await srv.stop(None)


async def test_grpc_aio_server_authorizes_clients(
    aio_server: tuple[grpc.aio.Server, int, AioSpiffeServerInterceptor], source: X509Source
) -> None:
    _, port, interceptor = aio_server
    creds = grpc_channel_credentials(source, server_trust_domain="example.org", svid_hint="client")
    async with grpc.aio.secure_channel(f"localhost:{port}", creds) as channel:
        assert (
            await channel.unary_unary(SAY, None, None)(b"x", timeout=IO_TIMEOUT) == CLIENT_ID.encode() + b"|x"
        )
        assert [r async for r in channel.unary_stream(MANY, None, None)(b"s", timeout=IO_TIMEOUT)] == [
            b"s0",
            b"s1",
        ]
        interceptor.authorizer = authorize_id("spiffe://example.org/other")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(SAY, None, None)(b"x", timeout=IO_TIMEOUT)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert CLIENT_ID in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [r async for r in channel.unary_stream(MANY, None, None)(b"s", timeout=IO_TIMEOUT)]
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
