"""``spiffe-bridge dev-agent``: run the dev agent until SIGTERM/SIGINT.

SIGUSR1 rotates all X509-SVIDs, SIGUSR2 rotates the X.509 root (and JWT key),
so demos and shell-driven tests can trigger pushes from outside.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from types import FrameType
from typing import Any

from spiffe_bridge.cli.argtypes import duration, mode
from spiffe_bridge.cli.main import summary
from spiffe_bridge.devagent.ca import KEY_TYPES
from spiffe_bridge.devagent.identity import Identity, trust_domain_name

DEFAULT_TD = "example.org"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dev-agent`` subcommand."""
    p = subparsers.add_parser(
        "dev-agent",
        help=summary("dev-agent"),
        description="Serve an embedded SPIFFE Workload API until SIGTERM or SIGINT.",
        epilog="Signals: SIGUSR1 rotates every X509-SVID; SIGUSR2 rotates the X.509 root "
        "and the JWT signing key. Durations: 30s, 5m, 1h, 1h30m, 250ms.",
    )
    p.add_argument(
        "--address",
        "--socket",
        dest="socket",
        default=os.environ.get("SPIFFE_ENDPOINT_SOCKET"),
        help="Unix socket path or unix:// URI to serve on (default: $SPIFFE_ENDPOINT_SOCKET); "
        "--socket is the same option",
    )
    p.add_argument("--trust-domain", default=DEFAULT_TD, help="own trust domain (%(default)s)")
    p.add_argument(
        "--spiffe-id",
        action="append",
        default=[],
        metavar="ID[#HINT]",
        help="identity to issue (repeatable; first is the default; default spiffe://<trust-domain>/workload)",
    )
    p.add_argument(
        "--dns-name", action="append", default=[], help="DNS SAN added to every X509-SVID (repeatable)"
    )
    p.add_argument("--ttl", type=duration, default=3600.0, help="X509-SVID lifetime (1h)")
    p.add_argument("--jwt-ttl", type=duration, default=300.0, help="JWT-SVID lifetime (5m)")
    p.add_argument("--rotate-every", type=duration, default=None, help="rotate SVIDs periodically")
    p.add_argument("--intermediate", action="store_true", help="sign SVIDs with an intermediate CA")
    p.add_argument(
        "--federate-with", action="append", default=[], metavar="TD", help="federated trust domain"
    )
    p.add_argument(
        "--permission-denied-for",
        type=duration,
        default=None,
        metavar="DURATION",
        help="answer PermissionDenied for this long after start",
    )
    p.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256", help="SVID key type")
    p.add_argument(
        "--socket-mode",
        type=mode,
        default=0o600,
        help="socket file mode, whatever the umask (0600: it hands out private keys; widen it, e.g. "
        "0660, for clients of other users)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code."""
    if not args.socket:
        print("dev-agent: --address is required (or set SPIFFE_ENDPOINT_SOCKET)", file=sys.stderr)
        return 2
    from spiffe_bridge.devagent.server import DevAgent

    try:
        td = trust_domain_name(args.trust_domain)
        specs = args.spiffe_id or [f"spiffe://{td}/workload"]
        identities = [Identity.parse(s, tuple(args.dns_name)) for s in specs]
        agent = DevAgent(
            args.socket,
            trust_domain=td,
            identities=identities,
            ttl=args.ttl,
            jwt_ttl=args.jwt_ttl,
            rotate_every=args.rotate_every,
            intermediate=args.intermediate,
            key_type=args.key_type,
            federate_with=args.federate_with,
            socket_mode=args.socket_mode,
        )
    except ValueError as err:
        print(f"dev-agent: {err}", file=sys.stderr)
        return 2
    wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
    with _SignalInbox(wanted) as inbox:
        try:
            if args.permission_denied_for:
                agent.deny(args.permission_denied_for)
            try:
                agent.start()
            except OSError as err:
                print(f"dev-agent: cannot serve on {agent.socket_path}: {err}", file=sys.stderr)
                return 1
            print(f"dev agent serving the SPIFFE Workload API on {agent.address} (trust domain {td})")
            print(f"SPIFFE_ENDPOINT_SOCKET={agent.address}", flush=True)
            while True:
                signum = inbox.next()
                if signum == signal.SIGUSR1:
                    agent.rotate()
                elif signum == signal.SIGUSR2:
                    agent.rotate_x509_bundle()
                    agent.rotate_jwt_bundle()
                else:
                    break
        finally:
            agent.stop()
    return 0


class _SignalInbox:
    """Deliver signals to the main loop through a wakeup socket (no polling, no lost signals)."""

    def __init__(self, signals: tuple[signal.Signals, ...]) -> None:
        self._signals = signals
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1
        self._pending: list[int] = []

    def __enter__(self) -> _SignalInbox:
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, _ignore)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()

    def next(self) -> int:
        """Block until one of the signals arrives and return its number."""
        while not self._pending:
            self._pending.extend(b for b in self._reader.recv(64) if b in self._signals)
        return self._pending.pop(0)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Python-level handler; the signal itself is read from the wakeup socket."""
