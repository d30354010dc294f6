"""``spiffe-bridge watch``: one line per X.509 context and JWT bundle update, like ``tail -f``.

Both streams are watched at once (the client reconnects with backoff on its own);
stream errors are printed on stderr and watching goes on. Ctrl-C (or ``--count``
updates) ends it with status 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from spiffe_bridge.cli.main import summary


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``watch`` subcommand."""
    p = subparsers.add_parser("watch", help=summary("watch"))
    p.add_argument("--address", help="Workload API address (default: $SPIFFE_ENDPOINT_SOCKET)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--count", type=int, default=0, metavar="N", help="stop after N updates (0: never)")
    p.add_argument("--no-jwt", action="store_true", help="watch only X.509 contexts")


class _Printer:
    """Serialises lines from both watcher threads and counts them towards ``--count``."""

    def __init__(self, line: Callable[[dict[str, Any]], str], count: int) -> None:
        self._lock = threading.Lock()
        self._line = line
        self._left = count
        self.done = threading.Event()

    def emit(self, event: dict[str, Any]) -> None:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        event = {"time": now, **event}
        with self._lock:
            if self.done.is_set():
                return
            print(self._line(event), flush=True)
            if self._left:
                self._left -= 1
                if not self._left:
                    self.done.set()


def _follow(updates: Iterator[Any], to_event: Callable[[Any], dict[str, Any]], printer: _Printer) -> None:
    from spiffe_bridge.errors import SpiffeBridgeError

    try:
        for update in updates:
            printer.emit(to_event(update))
    except SpiffeBridgeError as exc:  # the client was closed, or gave up
        if not printer.done.is_set():
            print(f"spiffe-bridge watch: {exc}", file=sys.stderr, flush=True)
            printer.done.set()


def run(args: argparse.Namespace) -> int:
    """Watch until interrupted or ``--count`` updates were printed."""
    from spiffe_bridge import WorkloadClient
    from spiffe_bridge.errors import SpiffeBridgeError
    from spiffe_bridge.inspect.events import event_line, jwt_event, x509_event

    def on_error(exc: Exception) -> None:
        print(f"spiffe-bridge watch: {exc} (retrying)", file=sys.stderr, flush=True)

    printer = _Printer(json.dumps if args.json else event_line, args.count)
    try:
        client = WorkloadClient(args.address, timeout=None, on_error=on_error)
    except SpiffeBridgeError as exc:
        print(f"spiffe-bridge watch: error: {exc}", file=sys.stderr)
        return 2
    streams: list[tuple[Iterator[Any], Callable[[Any], dict[str, Any]]]] = [
        (client.watch_x509_contexts(), x509_event)
    ]
    if not args.no_jwt:
        streams.append((client.watch_jwt_bundles(), jwt_event))
    threads = [
        threading.Thread(target=_follow, args=(s, f, printer), daemon=True, name="watch") for s, f in streams
    ]
    for t in threads:
        t.start()
    try:
        printer.done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        printer.done.set()
        client.close()
    return 0
