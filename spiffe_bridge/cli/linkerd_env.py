"""``spiffe-bridge linkerd-env``: linkerd2-proxy's identity EnvironmentFile, once or kept current.

Once: fetch the X.509 context, then print the env file (``LINKERD2_PROXY_IDENTITY_*``)
on stdout, or with ``--write DIR`` write ``linkerd.env`` and ``trust_anchors.pem``
atomically. ``--workload-api-address`` is the socket the *proxy* will use (agent or
relay); it defaults to ``--address``.

``--watch`` (needs ``--write``) is the sidecar (``spiffe-bridge run``) with one
``linkerd`` output built from these flags: it follows the Workload API, rewrites the
pair whenever it changes -- new trust anchors, or another SPIFFE ID for the chosen
SVID -- and then runs ``--restart-command`` (the output's ``restart_command``: an
argv, split like a shell would but run without one), e.g. ``systemctl try-restart
linkerd-proxy.service``, since the proxy parses its trust anchors only at start. An
SVID rotation alone changes nothing here: the proxy follows the Workload API itself.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from spiffe_bridge.cli.main import summary

if TYPE_CHECKING:
    from spiffe_bridge.formats import X509Options


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``linkerd-env`` subcommand."""
    from spiffe_bridge.cli.argtypes import argv
    from spiffe_bridge.cli.fetch import add_common, add_x509_selection

    p = subparsers.add_parser(
        "linkerd-env",
        help=summary("linkerd-env"),
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


def sidecar_config(args: argparse.Namespace, address: str) -> dict[str, Any]:
    """The sidecar configuration ``--watch`` runs: one ``linkerd`` output restarting ``--restart-command``."""
    output: dict[str, Any] = {
        "format": "linkerd",
        "dir": args.write,
        "layout": args.layout,
        "linkerd_server_name": args.server_name,
        "linkerd_workload_api_address": args.workload_api_address or address,
        "linkerd_legacy_socket_env": args.legacy_socket_env,
        "cert_file_mode": f"{args.cert_file_mode:04o}",
        "add_intermediates_to_bundle": args.add_intermediates_to_bundle,
        "include_federated_domains": args.include_federated_domains,
        "federated_layout": args.federated_layout,
        "omit_expired": args.omit_expired,
    }
    output.update({k: v for k in ("hint", "spiffe_id") if (v := getattr(args, k))})
    if args.restart_command:
        output["restart_command"] = list(args.restart_command)
    return {"agent_address": address, "outputs": [output]}


def _watch(args: argparse.Namespace) -> int:
    import json

    from spiffe_bridge.address import ENV_VAR, resolve
    from spiffe_bridge.errors import SpiffeBridgeError
    from spiffe_bridge.sidecar import config, plan
    from spiffe_bridge.sidecar.runner import Daemon

    try:
        address = resolve(args.address).uri
        raw = config.parse_text(json.dumps(sidecar_config(args, address)), "json")
        # the flags alone configure it: no SPIFFE_BRIDGE_* overrides from the environment
        settings = config.build(raw, "linkerd-env --watch", environ={ENV_VAR: address})
        plans, _ = plan.build(settings, {})
    except SpiffeBridgeError as exc:  # ConfigError and AddressError among them
        print(f"spiffe-bridge linkerd-env: error: {exc}", file=sys.stderr)
        return 1
    return Daemon(settings, plans).run()
