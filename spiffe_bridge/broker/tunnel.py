"""An in-process mTLS tunnel from a private Unix socket to the Broker endpoint.

Why: the agent's broker endpoint presents an SVID with a URI SAN only, and
gRPC Python's channel credentials insist on a hostname check it cannot pass.
So the gRPC channel speaks plaintext HTTP/2 to a socket only this process can
open (0600, in a fresh 0700 directory), and every connection accepted there is
piped over a stdlib TLS connection made with a ``SpiffeSSLContext``: our current
SVID as client certificate, the agent's SVID verified against our bundles and
authorized by SPIFFE ID, ALPN ``h2``. A peer that is not the authorized agent
fails the handshake; the gRPC side then sees a closed connection and retries.

The tunnel is asyncio; ``LoopThread`` hosts it for the blocking client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from spiffe_bridge.address import Endpoint
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.tls.ssl_connection import peer_spiffe_id

log = logging.getLogger("spiffe_bridge.broker")

T = TypeVar("T")
#: Bytes read per chunk when piping.
CHUNK = 64 * 1024
#: Default bound on connecting to the endpoint and finishing the TLS handshake.
HANDSHAKE_TIMEOUT = 10.0


class TlsTunnel:
    """Listens on ``path``; pipes each connection over TLS to ``target`` with ``context``.

    ``last_error`` is why the latest connection to the endpoint failed (None once the
    endpoint answered on a connection); ``peer`` is the SPIFFE ID the endpoint last authenticated as.
    ``on_error`` hears every failed connection (a refused peer, a refused SVID).
    """

    def __init__(
        self,
        target: Endpoint,
        context: ssl.SSLContext,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.target = target
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.on_error = on_error
        self.last_error: Exception | None = None
        self.peer: SpiffeId | None = None
        self._dir: str | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def path(self) -> str:
        """The private socket the gRPC channel connects to."""
        if self._dir is None:
            raise RuntimeError("tunnel not started")
        return os.path.join(self._dir, "broker.sock")

    @property
    def grpc_target(self) -> str:
        """The gRPC target of the private socket."""
        return "unix:" + self.path

    async def start(self) -> None:
        """Create the private directory and socket and start accepting."""
        if self._server is not None:
            return
        self._dir = tempfile.mkdtemp(prefix="spiffe-bridge-broker-")  # mode 0700
        self._server = await asyncio.start_unix_server(self._accept, path=self.path)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        """Stop accepting, drop every piped connection and remove the private directory."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- one connection ------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # server_hostname "": no hostname check and no SNI; the authorizer identifies the agent.
        if self.target.kind == "unix":
            return await asyncio.open_unix_connection(self.target.path, ssl=self.context, server_hostname="")
        return await asyncio.open_connection(
            self.target.host, self.target.port, ssl=self.context, server_hostname=""
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            try:
                up_reader, up_writer = await asyncio.wait_for(self._connect(), self.handshake_timeout)
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                self._failed(exc)
                return
            self._writers.add(up_writer)
            with contextlib.suppress(LookupError):
                self.peer = peer_spiffe_id(up_writer)
            try:
                await asyncio.gather(
                    _pump(reader, up_writer), _pump(up_reader, writer, self._failed, self._answered)
                )
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        finally:
            self._writers.discard(writer)
            writer.close()

    def _answered(self) -> None:
        """The endpoint sent data: it accepted our SVID (a finished handshake alone does not say so)."""
        self.last_error = None

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, TimeoutError):
            exc = TimeoutError(f"no TLS connection to {self.target} within {self.handshake_timeout:g}s")
        self.last_error = exc
        log.warning("broker endpoint %s: %s: %s", self.target, type(exc).__name__, exc)
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                log.exception("error callback raised; ignored")


async def _pump(
    source: asyncio.StreamReader,
    sink: asyncio.StreamWriter,
    on_tls_error: Callable[[Exception], None] | None = None,
    on_first_data: Callable[[], None] | None = None,
) -> None:
    """Copy until end of file or an error, then close the sink so the other direction ends too.

    ``on_tls_error`` hears a TLS alert read from the source: with TLS 1.3 the server
    checks our certificate after our side of the handshake is done, so an agent that
    refuses our SVID (not on its allow-list) says so on the first read.
    """
    try:
        while data := await source.read(CHUNK):
            if on_first_data is not None:
                on_first_data()
                on_first_data = None
            sink.write(data)
            await sink.drain()
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        pass  # the peer went away (an agent restart): not a refusal
    except ssl.SSLError as exc:
        if on_tls_error is not None:
            on_tls_error(exc)
    except OSError:
        pass
    finally:
        sink.close()


class LoopThread:
    """A private event loop in a daemon thread, for the blocking client's tunnel."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Stop the loop and join the thread (idempotent)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()
