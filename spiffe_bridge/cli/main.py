"""Command-line entry point: picks the command and hands the arguments to its module.

Each command's module in this package exposes ``add_parser(subparsers)`` and
``run(args) -> int``; it is imported only when its command runs, so
``spiffe-bridge run`` (and ``--version``) start fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

DESCRIPTION = (
    "SPIFFE identities for any workload or proxy: fetch SVIDs and bundles from a SPIRE agent "
    "(the SPIFFE Workload API), write them in each consumer's format, keep them current and "
    "reload the consumer (run), or re-serve the Workload API (relay)."
)

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "dev-agent": (
        "spiffe_bridge.cli.dev_agent",
        "serve an embedded Workload API for demos and tests",
    ),
    "demo": ("spiffe_bridge.cli.demo", "run the dev agent and write every format into a directory"),
    "fetch": ("spiffe_bridge.cli.fetch", "fetch X.509 or JWT material once and write/print it"),
    "run": ("spiffe_bridge.cli.run", "sidecar: a drop-in for spiffe-helper"),
    "relay": ("spiffe_bridge.cli.relay", "re-serve the Workload API on a local socket"),
    "inspect": (
        "spiffe_bridge.cli.inspect",
        "show what the agent serves or what credential files hold, and what is wrong",
    ),
    "doctor": ("spiffe_bridge.cli.doctor", "preflight checks: socket, identity, clock, files, ports"),
    "watch": ("spiffe_bridge.cli.watch", "print one line per X.509 or JWT bundle update"),
    "validate": ("spiffe_bridge.cli.validate", "validate a JWT-SVID locally or through the agent"),
    "linkerd-env": (
        "spiffe_bridge.cli.linkerd_env",
        "render a Linkerd proxy identity env file",
    ),
}


def summary(command: str) -> str:
    """The command's one-line help, as ``spiffe-bridge --help`` lists it (each module uses this)."""
    return COMMANDS[command][1]


def _normalise_go_flags(argv: list[str]) -> list[str]:
    """Accept spiffe-helper's Go flag spelling (-config f, -daemon-mode=false)."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            out.extend(argv[i:])
            break
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            out.append("-" + arg)
        else:
            out.append(arg)
    return out


def version_text() -> str:
    """What ``--version`` prints: the package version and the Python that runs it."""
    from spiffe_bridge import __version__

    return f"spiffe-bridge {__version__} (Python {sys.version.split()[0]})"


def _add_common(parser: argparse.ArgumentParser) -> None:
    """Options every subcommand has: --version (`run -version`, as spiffe-helper has it) and logging."""
    from spiffe_bridge.logs import FORMATS, LEVELS

    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument(
        "--log-level", type=str.lower, choices=LEVELS, default=None, help="log level (default info)"
    )
    parser.add_argument(
        "--log-format", choices=FORMATS, default=None, help="text, or one JSON object per line (default text)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse argv, import the chosen command's module and run it."""
    try:
        return _main(argv)
    except BrokenPipeError:  # `spiffe-bridge ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    # gRPC's C core logs connection churn (e.g. GOAWAY on agent restart) at INFO to stderr;
    # the CLI reports those events itself, so keep the core quiet unless the user asks.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in COMMANDS:
        args_list = [args_list[0], *_normalise_go_flags(args_list[1:])]
    parser = argparse.ArgumentParser(prog="spiffe-bridge", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = args_list[0] if args_list and args_list[0] in COMMANDS else None
    for name, (module, help_text) in COMMANDS.items():
        if name == chosen:
            importlib.import_module(module).add_parser(sub)
            _add_common(sub.choices[name])
        else:
            sub.add_parser(name, help=help_text)
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command != "run":  # run reads its defaults from the config file first
        from spiffe_bridge import logs

        logs.setup(args.log_level or "info", args.log_format or "text")
    command = importlib.import_module(COMMANDS[args.command][0])
    result: int = command.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
