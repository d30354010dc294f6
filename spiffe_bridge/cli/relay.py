"""``spiffe-bridge relay``: argument wiring for the Workload API relay, nothing else.

Runs an ``AsyncRelay`` on the main thread's event loop until SIGTERM or
SIGINT, then ends downstream streams, closes upstream and removes the socket.
Tells systemd it is ready (``Type=notify``) once the socket is served.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING

from spiffe_bridge.cli.argtypes import duration, host_port, mode, owner
from spiffe_bridge.cli.main import summary
from spiffe_bridge.errors import SpiffeBridgeError
from spiffe_bridge.relay.aio import DEFAULT_HOLD, DEFAULT_STARTUP_WAIT, AsyncRelay
from spiffe_bridge.relay.filter import SvidFilter
from spiffe_bridge.relay.listener import Listener
from spiffe_bridge.retry import Backoff
from spiffe_bridge.sdnotify import notify

if TYPE_CHECKING:
    pass


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``relay`` subcommand."""
    p = subparsers.add_parser(
        "relay",
        help=summary("relay"),
        description="Re-serve an upstream SPIFFE Workload API (one upstream stream per kind) on a "
        "local Unix socket to any number of clients, optionally showing them only some SVIDs.",
        epilog="An SVID is shown if its SPIFFE ID or its hint is allowed; with no --allow-* option "
        "every SVID is shown. Stops cleanly on SIGTERM/SIGINT.",
    )
    p.add_argument(
        "--address",
        "--upstream",
        dest="upstream",
        default=None,
        metavar="ADDR",
        help="the agent's (upstream) Workload API, unix:///path or tcp://IP:port "
        "(default: $SPIFFE_ENDPOINT_SOCKET); --upstream is the same option",
    )
    p.add_argument(
        "--listen",
        required=True,
        action="append",
        metavar="unix:///PATH[,OPTION...]",
        help="socket to serve on (repeatable: all sockets share the upstream streams); options "
        "id=ID, hint=HINT (repeatable), mode=0660, owner=USER:GROUP set that socket's own allow-list "
        "and file; without them the --allow-*/--socket-* flags apply",
    )
    p.add_argument(
        "--allow-spiffe-id",
        action="append",
        default=[],
        metavar="ID",
        help="show downstream only SVIDs with this SPIFFE ID (repeatable)",
    )
    p.add_argument(
        "--allow-hint",
        action="append",
        default=[],
        metavar="HINT",
        help="show downstream only SVIDs with this hint (repeatable)",
    )
    p.add_argument(
        "--socket-mode",
        type=mode,
        default=None,
        metavar="MODE",
        help="socket file mode, whatever the umask (default 0660: owner and group only; "
        "a mode that lets everyone connect is logged as a warning)",
    )
    p.add_argument(
        "--socket-owner",
        type=owner,
        default=None,
        metavar="UID[:GID]",
        help="socket owner and group, numbers or names (needs privileges)",
    )
    p.add_argument(
        "--hold",
        type=duration,
        default=DEFAULT_HOLD,
        metavar="DURATION",
        help="keep serving the last state this long after losing upstream (%(default)s; 0 = never)",
    )
    p.add_argument(
        "--startup-wait",
        type=duration,
        default=DEFAULT_STARTUP_WAIT,
        metavar="DURATION",
        help="how long a client that connects before upstream's first answer waits for it (%(default)s)",
    )
    p.add_argument(
        "--max-backoff",
        type=duration,
        default=5.0,
        metavar="DURATION",
        help="longest wait between upstream reconnects (%(default)s)",
    )
    p.add_argument(
        "--health-addr",
        type=host_port,
        default=None,
        metavar="[HOST:]PORT",
        help="serve /live, /ready and /metrics over HTTP here (HOST defaults to 127.0.0.1; off by default)",
    )
    validation = p.add_mutually_exclusive_group()
    validation.add_argument(
        "--forward-before-verify",
        action="store_true",
        help="fast path: hand each upstream update to clients before validating it, and take it back "
        "if it fails (saves ~1 ms per update, but a client that does not validate may use invalid "
        "material meanwhile); by default nothing reaches a client before it was validated",
    )
    # The old opt-in, now the default; still accepted so existing unit files keep working.
    validation.add_argument("--verify-first", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code."""
    try:
        relay = AsyncRelay(
            args.upstream,
            _listeners(args),
            hold=args.hold,
            startup_wait=args.startup_wait,
            backoff=Backoff(initial=0.2, maximum=max(args.max_backoff, 0.2)),
            forward_before_verify=args.forward_before_verify,
        )
    except (ValueError, SpiffeBridgeError) as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(relay, args.health_addr))


def _listeners(args: argparse.Namespace) -> list[Listener]:
    """Each --listen, with the --allow-*/--socket-* flags for what it does not set itself."""
    default = SvidFilter.of(args.allow_spiffe_id, args.allow_hint)
    return [
        Listener.parse(
            spec, default_filter=default, default_mode=args.socket_mode, default_owner=args.socket_owner
        )
        for spec in args.listen
    ]


async def _serve(relay: AsyncRelay, health_addr: tuple[str, int] | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    health = None
    if health_addr is not None:
        try:
            # imported only when asked for: http.server and friends cost the relay's start ~20 ms
            from spiffe_bridge.relay.health import health_server

            health = health_server(relay, *health_addr)  # binds now: a taken port fails before serving
        except OSError as exc:
            print(f"relay: {exc.strerror}", file=sys.stderr)
            return 1
    try:
        await relay.start()
    except OSError as exc:
        print(f"relay: cannot serve: {exc}", file=sys.stderr)
        if health is not None:
            health.stop()
        return 1
    try:
        for listener in relay.listeners:
            print(f"relay serving {listener.address} from {relay.upstream_endpoint}", flush=True)
        if health is not None:
            host, port = health.start().address
            print(f"relay health on http://{host}:{port} (/live, /ready, /metrics)", flush=True)
        notify("READY=1")
        await stop.wait()
        notify("STOPPING=1")
    finally:
        await relay.stop()
        if health is not None:
            await asyncio.to_thread(health.stop)
    return 0
