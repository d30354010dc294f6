"""``spiffe-bridge inspect``: show what the agent serves, or what is on disk and what is wrong with it.

``inspect --address A`` prints every X.509-SVID, bundle and JWT bundle the agent
serves; ``inspect PATH...`` detects the format of each file or directory, shows the
same fields and checks key <-> leaf, chain <-> bundle, expiry and modes. Exit status:
0 all good, 1 something is wrong (each problem is printed), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys

from spiffe_bridge.cli.argtypes import duration
from spiffe_bridge.cli.main import summary


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``inspect`` subcommand."""
    p = subparsers.add_parser("inspect", help=summary("inspect"))
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or directories any format wrote")
    p.add_argument("--address", help="inspect the Workload API at this address instead of files")
    p.add_argument(
        "--timeout", type=duration, default=30.0, metavar="DURATION", help="to wait for the agent (30s)"
    )
    p.add_argument("--json", action="store_true", help="print JSON (keys: svids, bundles, jwt_bundles)")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--pkcs12-password-file", metavar="FILE", help="read the PKCS#12 password from FILE")
    secret.add_argument("--pkcs12-password-env", metavar="VAR", help="read the PKCS#12 password from $VAR")


def run(args: argparse.Namespace) -> int:
    """Inspect the agent or the paths; print text or JSON."""
    from spiffe_bridge.cli.fetch import pkcs12_password
    from spiffe_bridge.errors import SpiffeBridgeError
    from spiffe_bridge.inspect.report import agent_lines, inspect_agent, inspect_path, path_lines

    if bool(args.paths) == bool(args.address):
        print("spiffe-bridge inspect: give either --address or one or more PATHs", file=sys.stderr)
        return 2
    try:
        if args.address:
            doc = inspect_agent(args.address, args.timeout)
            lines = agent_lines(doc)
            ok = True
        else:
            password = pkcs12_password(args)
            results = [inspect_path(p, password) for p in args.paths]
            ok = all(r["ok"] for r in results)
            doc = {"ok": ok, "paths": results}
            lines = [line for r in results for line in path_lines(r)]
    except (SpiffeBridgeError, LookupError, OSError) as exc:
        print(f"spiffe-bridge inspect: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else "\n".join(lines))
    return 0 if ok else 1
