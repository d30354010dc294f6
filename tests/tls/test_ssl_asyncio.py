"""asyncio streams over SpiffeSSLContext, fed by an AsyncX509Source."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _support.pki import roots_pem
from tls_peers import CLIENT_ID, SERVER_ID, forge, plain_context, serial_of

from spiffe_bridge import AsyncX509Source
from spiffe_bridge.devagent import DevAgent
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.tls import (
    PeerNotAuthorizedError,
    PeerRefusedError,
    SpiffeSSLContext,
    authorize_any,
    authorize_id,
    client_ssl_context,
    peer_spiffe_id,
    server_ssl_context,
)

TIMEOUT = 10.0
OTHER_ID = "spiffe://example.org/db"


class EchoServer:
    """asyncio TLS echo server recording the peer ID of each handled connection."""

    def __init__(self, context: SpiffeSSLContext) -> None:
        self.context = context
        self.peers: asyncio.Queue[SpiffeId] = asyncio.Queue()
        self.errors: list[BaseException] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_spiffe_id(writer)  # authorization already happened in the handshake
        await self.peers.put(peer)
        data = await reader.read(100)
        writer.write(str(peer).encode() + b"|" + data)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.context)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def async_source(agent: DevAgent) -> AsyncIterator[AsyncX509Source]:
    async with AsyncX509Source(agent.address, timeout=TIMEOUT) as src:
        yield src


async def _talk(context: ssl.SSLContext, port: int) -> tuple[bytes, int, SpiffeId | None]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        serial = serial_of(ssl_object.getpeercert(True))
        peer = peer_spiffe_id(writer) if isinstance(context, SpiffeSSLContext) else None
        writer.write(b"ping")
        await writer.drain()
        return await reader.read(100), serial, peer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_asyncio_mutual_tls_and_rotation(async_source: AsyncX509Source, agent: DevAgent) -> None:
    async with asyncio.timeout(TIMEOUT):
        with (
            server_ssl_context(async_source, authorize_id(CLIENT_ID), svid_hint="server") as sctx,
            client_ssl_context(async_source, authorize_id(SERVER_ID), svid_hint="client") as cctx,
        ):
            server = EchoServer(sctx)
            port = await server.start()
            try:
                reply, server_serial, peer = await _talk(cctx, port)
                assert reply == CLIENT_ID.encode() + b"|ping"
                assert peer == SpiffeId.parse(SERVER_ID)
                assert await server.peers.get() == SpiffeId.parse(CLIENT_ID)

                rotated = {m.hint: m.serial_number for m in agent.rotate()}
                # AsyncX509Source runs subscribers before it wakes waiters: contexts are current now
                await async_source.wait_for(
                    lambda c: c.svid(hint="server").leaf.serial_number == rotated["server"]
                )
                assert sctx.svid.leaf.serial_number == rotated["server"]
                reply, new_serial, _ = await _talk(cctx, port)
                assert new_serial == rotated["server"] != server_serial
                assert reply == CLIENT_ID.encode() + b"|ping"
            finally:
                await server.stop()


async def test_asyncio_server_refuses_before_the_handler_runs(
    async_source: AsyncX509Source, agent: DevAgent, tmp_path: Path
) -> None:
    intruder = forge(agent.ca, "spiffe://example.org/intruder")
    client = plain_context(tmp_path, server_side=False, mat=intruder, trust_pem=roots_pem(agent.ca))
    async with asyncio.timeout(TIMEOUT):
        with server_ssl_context(async_source, authorize_id(CLIENT_ID), svid_hint="server") as sctx:
            server = EchoServer(sctx)
            port = await server.start()
            try:
                try:
                    reply, _, _ = await _talk(client, port)
                except (OSError, ssl.SSLError):
                    reply = b""
                assert reply == b""  # dropped after the handshake; the handler never ran
                assert server.peers.empty()
            finally:
                await server.stop()


async def test_asyncio_client_refuses_unauthorized_server(async_source: AsyncX509Source) -> None:
    async with asyncio.timeout(TIMEOUT):
        with (
            server_ssl_context(async_source, authorize_any(), svid_hint="server") as sctx,
            client_ssl_context(async_source, authorize_id(OTHER_ID), svid_hint="client") as cctx,
        ):
            server = EchoServer(sctx)
            port = await server.start()
            try:
                with pytest.raises(PeerNotAuthorizedError, match=f"peer {SERVER_ID} is not authorized"):
                    await _talk(cctx, port)
            finally:
                await server.stop()


async def test_peer_spiffe_id_needs_an_authorized_spiffe_connection(async_source: AsyncX509Source) -> None:
    with pytest.raises(LookupError):
        peer_spiffe_id(ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO()))
    assert issubclass(PeerNotAuthorizedError, PeerRefusedError)
