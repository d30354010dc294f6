"""asyncio mTLS echo: ``asyncio.start_server(ssl=ctx)`` and ``open_connection(ssl=ctx)``.

    python examples/tls/asyncio_echo.py

Authorization happens inside the TLS handshake (in ``SSLObject.do_handshake``),
so a refused client never reaches the connection handler, and
``open_connection`` raises ``PeerRefusedError`` for a refused server. Inside
the handler, ``peer_spiffe_id(writer)`` tells who is on the other end.
"""

from __future__ import annotations

import asyncio

from _agent import CLIENT_ID, SERVER_ID, workload_api

from spiffe_bridge import AsyncX509Source
from spiffe_bridge.tls import (
    PeerRefusedError,
    authorize_id,
    client_ssl_context,
    peer_spiffe_id,
    server_ssl_context,
)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo one line back, prefixed with the authorized client's SPIFFE ID."""
    peer = peer_spiffe_id(writer)
    line = await reader.readline()
    writer.write(f"{peer} said: ".encode() + line)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def ask(context: object, port: int, text: str) -> str:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    print(f"  connected to {peer_spiffe_id(writer)}")
    writer.write(text.encode() + b"\n")
    answer = await reader.readline()
    writer.close()
    return answer.decode().rstrip()


async def main() -> None:
    with workload_api() as (address, agent):
        async with AsyncX509Source(address) as source:
            with (
                server_ssl_context(source, authorize_id(CLIENT_ID), svid_hint="server") as server_ctx,
                client_ssl_context(source, authorize_id(SERVER_ID), svid_hint="client") as client_ctx,
            ):
                server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
                port = server.sockets[0].getsockname()[1]
                async with server:
                    print("  " + await ask(client_ctx, port, "hello"))
                    if agent is not None:
                        serial = agent.rotate()[0].serial_number
                        # AsyncX509Source updates the contexts before its waiters wake up
                        await source.wait_for(lambda c: c.svid(hint="server").leaf.serial_number == serial)
                        new_serial = server_ctx.svid.leaf.serial_number
                        print(f"  rotated; new connections present serial {new_serial:x}")
                        print("  " + await ask(client_ctx, port, "hello after rotation"))
                    wrong = client_ssl_context(
                        source, authorize_id("spiffe://example.org/db"), svid_hint="client"
                    )
                    with wrong:
                        try:
                            await ask(wrong, port, "never sent")
                        except PeerRefusedError as exc:
                            print(f"  refused: {exc}")


if __name__ == "__main__":
    asyncio.run(main())
