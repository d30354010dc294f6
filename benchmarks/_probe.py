"""Probe processes: the clients under test, each in its own interpreter.

``python -m benchmarks._probe MODE SOCKET FIFO [ARG]`` -- every probe writes
``ready <t>`` once it holds its first update, then one ``event <t> ...`` line
per later update, to the FIFO (monotonic clock, shared by all processes).
Running each client in its own process keeps it off the GIL of the dev agent
that feeds it and of the other clients, as in a real deployment, and gives
the idle benchmark a process whose CPU and RSS belong to that client alone.

Modes:
  ours-callback      spiffe_bridge.X509Source, timestamp in the subscriber callback
  ours-files DIR     the same, plus pem rendering and FileSetWriter (what the sidecar does)
  ours-aio           spiffe_bridge.AsyncX509Source on asyncio (grpc.aio), timestamp in its callback
  pyspiffe-callback  py-spiffe's X509Source, timestamp in its subscriber callback
  fanout N           N raw Workload API streams (one channel each, no decoding) on grpc.aio
  relay LISTEN [forward-before-verify]
                     spiffe_bridge.relay.Relay from SOCKET to LISTEN (optionally on the fast path)

Imports happen inside each mode, so a py-spiffe probe never loads spiffe_bridge.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any


class _Out:
    """The event FIFO, written one whole line per ``os.write`` (atomic below PIPE_BUF)."""

    def __init__(self, fifo: str) -> None:
        self._fd = os.open(fifo, os.O_WRONLY)
        self._lock = threading.Lock()

    def write(self, kind: str, *fields: object) -> None:
        """Send ``kind field...`` as one line."""
        line = " ".join([kind, *(str(f) for f in fields)]) + "\n"
        with self._lock:
            os.write(self._fd, line.encode())


def _wait_for_term() -> None:
    """Idle until SIGTERM/SIGINT (an Event wait with a long timeout: no periodic wake-ups of our own)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(3600):
        pass


def ours(socket: str, out: _Out, files_dir: str | None) -> None:
    """spiffe_bridge.X509Source; with ``files_dir`` each update is also written as the sidecar would."""
    from spiffe_bridge import X509Source

    write: Any = None
    if files_dir is not None:
        from spiffe_bridge.fileset import FileSetWriter
        from spiffe_bridge.formats import X509Options, render_x509

        writer = FileSetWriter(files_dir, layout="flat")
        options = X509Options()

        def write(ctx: Any) -> None:
            writer.write(render_x509("pem", ctx, options))

    first = [True]

    def on_update(ctx: Any) -> None:
        if write is not None:
            write(ctx)
        now = time.monotonic()
        serial = ctx.default_svid.leaf.serial_number
        out.write("ready" if first[0] else "event", now, serial)
        first[0] = False

    with X509Source("unix://" + socket, timeout=30.0) as source:
        source.subscribe(on_update)
        _wait_for_term()


def ours_aio(socket: str, out: _Out) -> None:
    """spiffe_bridge.AsyncX509Source on asyncio.run."""
    import asyncio

    from spiffe_bridge import AsyncX509Source

    async def main() -> None:
        async with AsyncX509Source("unix://" + socket) as source:

            def on_update(ctx: Any) -> None:
                out.write("event", time.monotonic(), ctx.default_svid.leaf.serial_number)

            source.subscribe(on_update)
            out.write("ready", time.monotonic(), source.context.default_svid.leaf.serial_number)
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()

    asyncio.run(main())


def pyspiffe(socket: str, out: _Out) -> None:
    """py-spiffe's X509Source; ``ready`` once its constructor returned with the first update."""
    from spiffe import X509Source as PyX509Source

    with PyX509Source(socket_path="unix://" + socket, timeout_in_seconds=30) as source:

        def on_update() -> None:
            now = time.monotonic()
            serial = source.get_x509_context().default_svid.leaf.serial_number
            out.write("event", now, serial)

        source.subscribe_for_updates(on_update)
        out.write("ready", time.monotonic(), source.svid.leaf.serial_number)
        _wait_for_term()


def fanout(socket: str, out: _Out, n: int) -> None:
    """N raw FetchX509SVID streams; one line per message index once all N streams received it."""
    import asyncio

    import grpc
    import grpc.aio

    from spiffe_bridge._proto import workload_pb2 as pb

    async def main() -> None:
        received: list[list[float]] = [[] for _ in range(n)]
        reported = [0]
        cond = asyncio.Condition()

        async def stream(i: int) -> None:
            channel = grpc.aio.insecure_channel("unix:" + socket)
            call = channel.unary_stream(
                "/SpiffeWorkloadAPI/FetchX509SVID",
                request_serializer=pb.X509SVIDRequest.SerializeToString,
                response_deserializer=None,
            )(pb.X509SVIDRequest(), metadata=(("workload.spiffe.io", "true"),), wait_for_ready=True)
            async for _message in call:
                received[i].append(time.monotonic())
                async with cond:
                    cond.notify_all()

        async def reporter() -> None:
            while True:
                async with cond:
                    await cond.wait_for(lambda: min(len(r) for r in received) > reported[0])
                k = reported[0]
                times = [r[k] for r in received]
                out.write("ready" if k == 0 else "event", min(times), max(times))
                reported[0] += 1

        tasks = [asyncio.create_task(stream(i)) for i in range(n)]
        tasks.append(asyncio.create_task(reporter()))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        for task in tasks:
            task.cancel()

    asyncio.run(main())


def relay(socket: str, out: _Out, listen: str, forward_first: bool) -> None:
    """spiffe_bridge.relay.Relay serving ``listen`` from the agent at ``socket``."""
    from spiffe_bridge.relay import Relay

    with Relay("unix://" + socket, "unix://" + listen, forward_before_verify=forward_first) as running:
        running.wait_serving(timeout=30)
        out.write("ready", time.monotonic())
        _wait_for_term()


def main(argv: list[str]) -> int:
    """Run one probe; on failure write ``error ...`` to the FIFO so the benchmark stops waiting."""
    mode, socket, fifo, *rest = argv
    out = _Out(fifo)
    try:
        if mode == "ours-callback":
            ours(socket, out, None)
        elif mode == "ours-files":
            ours(socket, out, rest[0])
        elif mode == "ours-aio":
            ours_aio(socket, out)
        elif mode == "pyspiffe-callback":
            pyspiffe(socket, out)
        elif mode == "fanout":
            fanout(socket, out, int(rest[0]))
        elif mode == "relay":
            relay(socket, out, rest[0], rest[1:] == ["forward-before-verify"])
        else:
            raise SystemExit(f"unknown probe mode {mode!r}")
    except Exception as exc:
        out.write("error", mode, type(exc).__name__, str(exc).replace("\n", " ")[:300])
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
