"""``spiffe-bridge linkerd-env``: render linkerd2-proxy's identity EnvironmentFile once.

Fetches the X.509 context, then prints the env file (``LINKERD2_PROXY_IDENTITY_*``)
on stdout, or with ``--write DIR`` writes ``linkerd.env`` and ``trust_anchors.pem``
atomically. ``--workload-api-address`` is the socket the *proxy* will use (agent
or relay); it defaults to ``--address``.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``linkerd-env`` subcommand."""
    from spiffe_bridge.fetch_cli import add_common, add_x509_selection

    p = subparsers.add_parser("linkerd-env", help="render a Linkerd proxy identity env file")
    add_common(p)
    add_x509_selection(p)
    p.add_argument("--server-name", required=True, help="the proxy's SNI name (SERVER_NAME)")
    p.add_argument("--workload-api-address", help="socket the proxy connects to (default: --address)")
    p.add_argument(
        "--legacy-socket-env",
        action="store_true",
        help="also set LINKERD2_PROXY_IDENTITY_SPIRE_SOCKET (proxies that predate the new name)",
    )


def run(args: argparse.Namespace) -> int:
    """Fetch once and print or write the env file; exit 1 on failure."""
    import dataclasses

    from spiffe_bridge import WorkloadClient
    from spiffe_bridge.errors import SpiffeBridgeError
    from spiffe_bridge.fetch_cli import print_summary, write_files, x509_options, x509_summary
    from spiffe_bridge.formats import linkerd, render_x509

    try:
        with WorkloadClient(args.address, timeout=args.timeout) as client:
            ctx = client.fetch_x509_context(timeout=args.timeout)
            options = dataclasses.replace(
                x509_options(args, client.endpoint),
                linkerd_server_name=args.server_name,
                linkerd_workload_api_address=args.workload_api_address or client.endpoint,
                linkerd_legacy_socket_env=args.legacy_socket_env,
            )
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
