"""``spiffe-bridge linkerd-env``: linkerd2-proxy's identity EnvironmentFile, once or kept current.

Once: fetch the X.509 context, then print the env file (``LINKERD2_PROXY_IDENTITY_*``)
on stdout, or with ``--write DIR`` write ``linkerd.env`` and ``trust_anchors.pem``
atomically. ``--workload-api-address`` is the socket the *proxy* will use (agent or
relay); it defaults to ``--address``.

``--watch`` (needs ``--write``): keep following the Workload API and rewrite the pair
whenever the env file's content changes -- new trust anchors, or another SPIFFE ID
for the chosen SVID. The proxy parses its trust anchors only at start, so each such
change then runs ``--restart-command`` (an argv, split like a shell would but run
without one), e.g. ``systemctl try-restart linkerd-proxy.service``. An SVID rotation
alone changes nothing here: the proxy follows the Workload API stream itself.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spiffe_bridge.formats import X509Options
    from spiffe_bridge.model import X509Context

log = logging.getLogger("spiffe_bridge.linkerd_env")

#: Seconds the restart command may take before it is killed.
RESTART_TIMEOUT = 120.0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``linkerd-env`` subcommand."""
    from spiffe_bridge.cli.argtypes import argv
    from spiffe_bridge.cli.fetch import add_common, add_x509_selection

    p = subparsers.add_parser(
        "linkerd-env",
        help="render a Linkerd proxy identity env file",
        description="Render linkerd2-proxy's identity environment (SPIRE mode) as a systemd "
        "EnvironmentFile, once or, with --watch, whenever it changes.",
    )
    add_common(p)
    add_x509_selection(p)
    p.add_argument("--server-name", required=True, help="the proxy's SNI name (SERVER_NAME)")
    p.add_argument("--workload-api-address", help="socket the proxy connects to (default: --address)")
    p.add_argument(
        "--legacy-socket-env",
        action="store_true",
        help="also set LINKERD2_PROXY_IDENTITY_SPIRE_SOCKET (proxies that predate the new name)",
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="keep running; rewrite the files (and run --restart-command) when the env changes",
    )
    p.add_argument(
        "--restart-command",
        type=argv,
        metavar="'CMD ARG...'",
        help="with --watch: run this argv after the env changed, e.g. "
        "'systemctl try-restart linkerd-proxy.service' (the proxy reads anchors only at start)",
    )


def _options(args: argparse.Namespace, endpoint: str) -> X509Options:
    import dataclasses

    from spiffe_bridge.cli.fetch import x509_options

    return dataclasses.replace(
        x509_options(args, endpoint),
        linkerd_server_name=args.server_name,
        linkerd_workload_api_address=args.workload_api_address or endpoint,
        linkerd_legacy_socket_env=args.legacy_socket_env,
    )


def run(args: argparse.Namespace) -> int:
    """Print or write the env file once, or keep it current with ``--watch``."""
    if args.watch and not args.write:
        print("spiffe-bridge linkerd-env: --watch needs --write DIR", file=sys.stderr)
        return 2
    if args.restart_command and not args.watch:
        print("spiffe-bridge linkerd-env: --restart-command needs --watch", file=sys.stderr)
        return 2
    if args.watch:
        return _watch(args)
    return _once(args)


def _once(args: argparse.Namespace) -> int:
    from spiffe_bridge import WorkloadClient
    from spiffe_bridge.cli.fetch import print_summary, write_files, x509_summary
    from spiffe_bridge.errors import SpiffeBridgeError
    from spiffe_bridge.formats import linkerd, render_x509

    try:
        with WorkloadClient(args.address, timeout=args.timeout) as client:
            ctx = client.fetch_x509_context(timeout=args.timeout)
            options = _options(args, client.endpoint)
        if not args.write:
            sys.stdout.write(linkerd.env_file(ctx, options).decode())
            return 0
        restart = linkerd.anchors_changed(args.write, ctx, options)
        files = render_x509("linkerd", ctx, options)
        result = write_files(args, files)
        summary = x509_summary(ctx, options)
        summary.update(
            directory=args.write,
            changed=result.changed,
            files=[f.name for f in files],
            trust_anchors_changed=restart,
        )
        print_summary(args, summary)
        return 0
    except (SpiffeBridgeError, OSError) as exc:
        print(f"spiffe-bridge linkerd-env: error: {exc}", file=sys.stderr)
        return 1


class EnvKeeper:
    """Writes the env file set for each update whose env text differs; restarts the proxy on changes.

    The first write counts as a change only if an env file with other content was
    already there (a proxy may be running with it); creating it is not.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        options: X509Options,
        restart: list[str] | None,
        on_first_write: Callable[[], object] | None = None,
    ) -> None:
        from spiffe_bridge.fileset import FileSetWriter

        self._args = args
        self._options = options
        self._restart = restart
        self._on_first_write = on_first_write
        self._writer = FileSetWriter(args.write, layout=args.layout)
        self._last: bytes | None = None
        self.restarts = 0

    def update(self, ctx: X509Context) -> None:
        """Called for each new X.509 context (on the source's subscriber thread)."""
        from spiffe_bridge.errors import SpiffeBridgeError
        from spiffe_bridge.formats import linkerd, render_x509

        try:
            env = linkerd.env_file(ctx, self._options)
            if env == self._last:
                return  # e.g. an SVID rotation: same ID, same anchors
            previous = self._last if self._last is not None else self._on_disk()
            self._writer.write(render_x509("linkerd", ctx, self._options))
        except (SpiffeBridgeError, OSError) as exc:
            log.error("linkerd-env: not written: %s", exc)
            return
        first, self._last = self._last is None, env
        changed = previous is not None and previous != env
        state = "created" if previous is None else "changed" if changed else "unchanged"
        print(f"wrote {self._args.write}: {state}", flush=True)
        if first and self._on_first_write is not None:
            self._on_first_write()
        if changed and self._restart:
            self._run_restart()

    def _on_disk(self) -> bytes | None:
        try:
            return (Path(self._args.write) / self._options.linkerd_env_file_name).read_bytes()
        except OSError:
            return None

    def _run_restart(self) -> None:
        assert self._restart is not None
        self.restarts += 1
        try:
            done = subprocess.run(self._restart, capture_output=True, text=True, timeout=RESTART_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("linkerd-env: restart command %s failed: %s", self._restart, exc)
            return
        if done.returncode != 0:
            log.error(
                "linkerd-env: restart command %s exited %d: %s",
                self._restart,
                done.returncode,
                done.stderr.strip(),
            )
            return
        print(f"restarted: {shlex.join(self._restart)}", flush=True)


def _watch(args: argparse.Namespace) -> int:
    from spiffe_bridge import X509Source
    from spiffe_bridge.address import resolve
    from spiffe_bridge.errors import SpiffeBridgeError
    from spiffe_bridge.sdnotify import notify
    from spiffe_bridge.sources.state import SourceStatus

    stop = threading.Event()
    failure: list[Exception | None] = []

    def on_status(status: SourceStatus, exc: Exception | None) -> None:
        if status is SourceStatus.FAILED:
            failure.append(exc)
            stop.set()

    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            options = _options(args, resolve(args.address).uri)
            source = X509Source(args.address, timeout=args.timeout)
        except SpiffeBridgeError as exc:
            print(f"spiffe-bridge linkerd-env: error: {exc}", file=sys.stderr)
            return 1
        with source:
            source.state.add_status_listener(on_status)
            keeper = EnvKeeper(args, options, args.restart_command, on_first_write=lambda: notify("READY=1"))
            source.subscribe(keeper.update)
            while not stop.wait(3600):
                pass
            notify("STOPPING=1")
        if failure:
            print(f"spiffe-bridge linkerd-env: error: {failure[0]}", file=sys.stderr)
            return 1
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
