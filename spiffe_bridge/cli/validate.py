"""``spiffe-bridge validate jwt TOKEN --audience AUD``: is this JWT-SVID good, and if not, why?

With ``--bundle FILE`` (a JWKS named ``<trust domain>.json``, a JWKS for the token's
own trust domain, or spiffe-helper's ``jwt_bundle.json``) the token is validated
locally; otherwise through the agent's ValidateJWTSVID. TOKEN ``-`` reads stdin.
Exit status: 0 valid, 1 invalid (the reason is printed), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from spiffe_bridge.cli.argtypes import duration
from spiffe_bridge.cli.main import summary

if TYPE_CHECKING:
    from spiffe_bridge.jwtsvid import JwtSvid


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``validate jwt``."""
    p = subparsers.add_parser("validate", help=summary("validate"))
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    j = kinds.add_parser("jwt", help="validate a JWT-SVID for an audience")
    j.add_argument("token", metavar="TOKEN", help="the compact JWS, or - to read it from stdin")
    j.add_argument("--audience", required=True, help="the audience the token must be for")
    source = j.add_mutually_exclusive_group()
    source.add_argument(
        "--address", help="validate through this Workload API (default: $SPIFFE_ENDPOINT_SOCKET)"
    )
    source.add_argument("--bundle", metavar="FILE", help="validate locally against this JWT bundle file")
    j.add_argument(
        "--timeout", type=duration, default=30.0, metavar="DURATION", help="to wait for the agent (30s)"
    )
    j.add_argument("--json", action="store_true", help="print the result as JSON")


def _validate(args: argparse.Namespace, token: str) -> JwtSvid:
    if args.bundle:
        from spiffe_bridge.inspect.jwt_files import load_bundles
        from spiffe_bridge.jwtsvid import validate_jwt_svid

        return validate_jwt_svid(token, args.audience, load_bundles(args.bundle, token))
    from spiffe_bridge import WorkloadClient

    with WorkloadClient(args.address, timeout=args.timeout) as client:
        return client.validate_jwt_svid(token, args.audience, timeout=args.timeout)


def run(args: argparse.Namespace) -> int:
    """Validate and print ``valid``/``invalid`` with the SPIFFE ID or the reason."""
    from spiffe_bridge.errors import JwtSvidError, SpiffeBridgeError
    from spiffe_bridge.inspect.checks import token_header
    from spiffe_bridge.inspect.describe import describe_jwt_svid

    token = (sys.stdin.read() if args.token == "-" else args.token).strip()  # noqa: S105 (stdin marker)
    if not token:
        print("spiffe-bridge validate jwt: the token is empty", file=sys.stderr)
        return 2
    via = f"bundle {args.bundle}" if args.bundle else "the Workload API"
    try:
        svid = _validate(args, token)
    except JwtSvidError as exc:
        reason = str(exc)
        if args.json:
            print(json.dumps({"valid": False, "reason": reason, "checked_with": via}))
        else:
            print(f"invalid: {reason} (checked with {via})")
        return 1
    except (SpiffeBridgeError, OSError, ValueError) as exc:
        print(f"spiffe-bridge validate jwt: error: {exc}", file=sys.stderr)
        return 1
    doc = {"valid": True, "checked_with": via, **describe_jwt_svid(svid, token_header(token))}
    if args.json:
        print(json.dumps(doc))
    else:
        print(
            f"valid: {doc['spiffe_id']} for {', '.join(doc['audience'])}, expires {doc['expires_at']} ({via})"
        )
    return 0
