"""``spiffe-bridge doctor``: preflight checks, one line each, with the fix for every failure.

``doctor -config helper.conf`` checks the agent the configuration names and
everything it points at (directories, command, pid file, health port, linkerd and
envoy-sds outputs); ``doctor --address A`` checks only the agent. Exit status: 0
when every check passes, 1 when one fails, 2 for a bad configuration or usage.
"""

from __future__ import annotations

import argparse
import json
import sys

from spiffe_bridge.cli.argtypes import duration
from spiffe_bridge.cli.main import summary


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``doctor`` subcommand."""
    p = subparsers.add_parser("doctor", help=summary("doctor"))
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="FILE", help="check this sidecar configuration (helper.conf)")
    source.add_argument("--address", help="check only this Workload API (default: $SPIFFE_ENDPOINT_SOCKET)")
    p.add_argument("--hint", default="", help="with --address: the SVID hint that must exist")
    p.add_argument("--spiffe-id", default="", help="with --address: the SPIFFE ID that must be served")
    p.add_argument(
        "--timeout", type=duration, default=10.0, metavar="DURATION", help="for each network check (10s)"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the checks and print one line per check."""
    from spiffe_bridge.address import ENV_VAR
    from spiffe_bridge.doctor.runner import check_address, check_config
    from spiffe_bridge.sidecar.config import ConfigError, load

    if args.config:
        try:
            config = load(args.config)
        except ConfigError as exc:
            print(f"spiffe-bridge doctor: {exc}", file=sys.stderr)
            return 2
        results = check_config(config, timeout=args.timeout)
    else:
        import os

        address = args.address or os.environ.get(ENV_VAR, "")
        if not address:
            print(f"spiffe-bridge doctor: give -config FILE or --address, or set {ENV_VAR}", file=sys.stderr)
            return 2
        results = check_address(address, args.hint, args.spiffe_id, args.timeout)
    ok = all(r.ok for r in results)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [r.as_dict() for r in results]}, indent=2))
    else:
        for r in results:
            print(r.line())
        skips = sum(r.skipped for r in results)
        failures = sum(not r.ok for r in results) - skips
        print(f"{len(results) - failures - skips} passed, {failures} failed, {skips} not checked")
    return 0 if ok else 1
