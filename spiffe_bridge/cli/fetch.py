"""``spiffe-bridge fetch``: fetch X.509 or JWT material once, write it in one format, summarise.

``fetch x509 --write DIR --format pem`` writes the files atomically and prints the
SPIFFE ID, expiry and files; without ``--write`` it only prints the summary.
``fetch jwt --audience A`` prints the token on stdout (for ``$(...)``) or, with
``--write``, stores it (and the JWT bundles) instead. Key material is never printed.
Exit status as ``spiffe-bridge run`` one-shot: 0 done, 2 usage or configuration error,
3 agent unavailable, 4 no identity (or no SVID with the requested hint or ID), 5 write error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from spiffe_bridge.cli.argtypes import duration, mode
from spiffe_bridge.cli.main import summary

if TYPE_CHECKING:
    from spiffe_bridge.fileset import WriteResult
    from spiffe_bridge.formats import X509Options
    from spiffe_bridge.jwtsvid import JwtSvid
    from spiffe_bridge.x509context import X509Context


def add_common(p: argparse.ArgumentParser) -> None:
    """Options every fetch-like command shares: address, timeout, output directory and layout."""
    p.add_argument("--address", help="Workload API address (default: $SPIFFE_ENDPOINT_SOCKET)")
    p.add_argument(
        "--timeout",
        type=duration,
        default=30.0,
        metavar="DURATION",
        help="how long to wait for the agent (30s)",
    )
    p.add_argument("--write", metavar="DIR", help="write the files into DIR (created if missing)")
    p.add_argument(
        "--layout",
        choices=("symlink", "flat"),
        default="symlink",
        help="symlink: ..data swap, whole set switches at once (default); flat: one rename per file",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")


def add_x509_selection(p: argparse.ArgumentParser) -> None:
    """Options choosing the SVID and the trust material (spiffe-helper's knobs)."""
    p.add_argument("--hint", help="use the X.509-SVID with this hint (default: the first)")
    p.add_argument("--spiffe-id", help="use the X.509-SVID with this SPIFFE ID")
    p.add_argument("--add-intermediates-to-bundle", action="store_true")
    p.add_argument("--include-federated-domains", action="store_true")
    p.add_argument("--federated-layout", choices=("per-trust-domain", "merged"), default="per-trust-domain")
    p.add_argument("--omit-expired", action="store_true", help="drop expired certificates from the files")
    p.add_argument("--cert-file-mode", type=mode, default=0o644, metavar="MODE")
    p.add_argument("--key-file-mode", type=mode, default=0o600, metavar="MODE")
    p.add_argument(
        "--allow-shared-key-file-mode",
        action="store_true",
        help="allow a --key-file-mode with group or other bits (the key file becomes readable by them)",
    )


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``fetch`` subcommand with its ``x509`` and ``jwt`` kinds."""
    p = subparsers.add_parser(
        "fetch",
        help=summary("fetch"),
        description="Fetch identities from the Workload API once: print a summary, or write the files "
        "in one format. Exit codes as run's one-shot mode: 0 ok, 2 usage, 3 agent unavailable, "
        "4 no identity, 5 write error.",
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)

    x = kinds.add_parser(
        "x509",
        help="fetch the X.509-SVID and bundles",
        description="Fetch the X.509-SVID and the trust bundles; with --write, write them in --format "
        "atomically. Key material is never printed.",
    )
    add_common(x)
    add_x509_selection(x)
    from spiffe_bridge.formats import X509_FORMATS

    x.add_argument("--format", choices=X509_FORMATS, default="pem", help="file format (pem)")
    secret = x.add_mutually_exclusive_group()
    secret.add_argument("--pkcs12-password-file", metavar="FILE", help="read the PKCS#12 password from FILE")
    secret.add_argument("--pkcs12-password-env", metavar="VAR", help="read the PKCS#12 password from $VAR")
    x.add_argument("--linkerd-server-name", help="linkerd: the proxy's SNI name")
    x.add_argument(
        "--linkerd-workload-api-address", help="linkerd: socket the proxy uses (default: --address)"
    )

    j = kinds.add_parser(
        "jwt",
        help="fetch a JWT-SVID (and optionally the JWT bundles)",
        description="Fetch a JWT-SVID for the audiences: the bare token on stdout (for $(...)), one JSON "
        "object with --json, or the token file (and JWT bundles) with --write.",
    )
    add_common(j)
    j.add_argument("--audience", action="append", required=True, help="audience (repeatable)")
    j.add_argument("--spiffe-id", help="mint for this SPIFFE ID (default: the first identity)")
    j.add_argument("--hint", help="use the JWT-SVID with this hint")
    j.add_argument("--file-name", default="jwt_svid.token", help="token file name with --write")
    j.add_argument("--bundles", action="store_true", help="also fetch and write the JWT bundles")


def pkcs12_password(args: argparse.Namespace) -> str | None:
    """The PKCS#12 password from --pkcs12-password-file or --pkcs12-password-env (None: neither given)."""
    from spiffe_bridge.formats.pkcs12 import read_password

    file_name = getattr(args, "pkcs12_password_file", None) or ""
    env_name = getattr(args, "pkcs12_password_env", None) or ""
    if not file_name and env_name and env_name not in os.environ:  # asked for by name: say so
        raise LookupError(f"${env_name} is not set")
    return read_password(file_name, env_name, os.environ)


def x509_options(args: argparse.Namespace, endpoint: str) -> X509Options:
    """X509Options from parsed arguments (``endpoint`` is the default Linkerd socket)."""
    from spiffe_bridge.formats import X509Options

    return X509Options(
        hint=args.hint,
        spiffe_id=args.spiffe_id,
        add_intermediates_to_bundle=args.add_intermediates_to_bundle,
        include_federated_domains=args.include_federated_domains,
        federated_layout=args.federated_layout,
        omit_expired=args.omit_expired,
        cert_file_mode=args.cert_file_mode,
        key_file_mode=args.key_file_mode,
        allow_shared_key_file_mode=args.allow_shared_key_file_mode,
        pkcs12_password=pkcs12_password(args),
        linkerd_server_name=getattr(args, "linkerd_server_name", None),
        linkerd_workload_api_address=getattr(args, "linkerd_workload_api_address", None) or endpoint,
    )


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def x509_summary(ctx: X509Context, options: X509Options) -> dict[str, Any]:
    """What was fetched, without key material: SPIFFE ID, hint, expiry, trust domains."""
    from spiffe_bridge.formats import select_svid

    svid = select_svid(ctx, options)
    return {
        "spiffe_id": str(svid.spiffe_id),
        "hint": svid.hint,
        "expires_at": _iso(svid.expires_at),
        "svids": [str(s.spiffe_id) for s in ctx.svids],
        "trust_domains": [td.name for td in ctx.bundles if td not in ctx.federated],
        "federated_trust_domains": sorted(td.name for td in ctx.federated),
    }


def write_files(args: argparse.Namespace, files: list[Any]) -> WriteResult:
    """Write a file set into ``args.write`` with the chosen layout."""
    from spiffe_bridge.fileset import FileSetWriter

    return FileSetWriter(args.write, layout=args.layout).write(files)


def print_summary(args: argparse.Namespace, summary: dict[str, Any], stream: Any = None) -> None:
    """Print the summary as ``key: value`` lines or JSON."""
    out = stream or sys.stdout
    if args.json:
        print(json.dumps(summary, indent=2), file=out)
        return
    for key, value in summary.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "-"
        print(f"{key}: {value}", file=out)


def _files_summary(args: argparse.Namespace, files: list[Any], result: WriteResult) -> dict[str, Any]:
    return {
        "directory": os.path.abspath(args.write),
        "changed": result.changed,
        "files": [f"{f.name} ({f.mode:04o})" for f in files],
    }


class _Exit(Exception):
    """A failure with its exit code (the sidecar's one-shot table)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _preflight(address: str | None) -> None:
    """Fail at once on a socket this process can never open, instead of after --timeout."""
    from spiffe_bridge.address import resolve, unreachable_reason
    from spiffe_bridge.sidecar.exitcodes import EXIT_UNAVAILABLE

    reason = unreachable_reason(resolve(address))
    if reason:
        raise _Exit(EXIT_UNAVAILABLE, reason)


def _write(args: argparse.Namespace, files: list[Any]) -> WriteResult:
    from spiffe_bridge.sidecar.exitcodes import EXIT_WRITE

    try:
        return write_files(args, files)
    except OSError as exc:  # WriteError is an OSError
        raise _Exit(EXIT_WRITE, f"cannot write {args.write}: {exc}") from None


def _run_x509(args: argparse.Namespace) -> int:
    from spiffe_bridge import WorkloadClient
    from spiffe_bridge.formats import render_x509

    _preflight(args.address)
    with WorkloadClient(args.address, timeout=args.timeout) as client:
        ctx = client.fetch_x509_context(timeout=args.timeout)
        options = x509_options(args, client.endpoint)
    summary = x509_summary(ctx, options)
    if args.write:
        files = render_x509(args.format, ctx, options)
        summary.update(format=args.format, **_files_summary(args, files, _write(args, files)))
    print_summary(args, summary)
    return 0


def _jwt_summary(svid: JwtSvid) -> dict[str, Any]:
    return {
        "spiffe_id": str(svid.spiffe_id),
        "hint": svid.hint,
        "audience": list(svid.audience),
        "expires_at": _iso(dt.datetime.fromtimestamp(svid.expiry, dt.UTC)),
    }


def _run_jwt(args: argparse.Namespace) -> int:
    from spiffe_bridge import WorkloadClient
    from spiffe_bridge.formats import render_jwt

    audience, *extra = args.audience
    _preflight(args.address)
    with WorkloadClient(args.address, timeout=args.timeout) as client:
        svid = client.fetch_jwt_svid(
            audience, *extra, spiffe_id=args.spiffe_id, hint=args.hint, timeout=args.timeout
        )
        bundles = client.fetch_jwt_bundles(timeout=args.timeout) if args.bundles else None
    summary = _jwt_summary(svid)
    if not args.write:
        if args.json:  # one JSON object on stdout, the token in it
            print_summary(args, {"token": svid.token, **summary})
        else:  # the bare token on stdout, for $(...); the summary beside it on stderr
            print(svid.token)
            print_summary(args, summary, sys.stderr)
        return 0
    files = render_jwt([(svid, args.file_name)], bundles)
    summary.update(_files_summary(args, files, _write(args, files)))
    print_summary(args, summary)
    return 0


def _exit_code(exc: Exception) -> int:
    """The sidecar's exit-code table for a failure of fetch."""
    from spiffe_bridge.errors import AddressError, NoIdentityError, SpiffeBridgeError, SvidNotFoundError
    from spiffe_bridge.sidecar.exitcodes import EXIT_CONFIG, EXIT_NO_IDENTITY, EXIT_UNAVAILABLE

    if isinstance(exc, _Exit):
        return exc.code
    if isinstance(exc, AddressError):
        return EXIT_CONFIG
    if isinstance(exc, NoIdentityError | SvidNotFoundError):
        return EXIT_NO_IDENTITY  # PermissionDenied, or no SVID with the requested hint / ID
    if isinstance(exc, SpiffeBridgeError):
        return EXIT_UNAVAILABLE  # unreachable, deadline, or refused / invalid material
    return EXIT_CONFIG  # a password file or variable that cannot be read


def run(args: argparse.Namespace) -> int:
    """Run ``fetch x509`` or ``fetch jwt``; a failure is one line on stderr and its exit code."""
    from spiffe_bridge.errors import SpiffeBridgeError

    try:
        return _run_x509(args) if args.kind == "x509" else _run_jwt(args)
    except (_Exit, SpiffeBridgeError, LookupError, OSError) as exc:
        print(f"spiffe-bridge fetch {args.kind}: error: {exc}", file=sys.stderr)
        return _exit_code(exc)
