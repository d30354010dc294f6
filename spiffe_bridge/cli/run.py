"""``spiffe-bridge run``: spiffe-helper's command line, wired to the sidecar library.

``spiffe-bridge run -config helper.conf [-daemon-mode=false] [-- prog args...]``
(Go-style single-dash flags are rewritten by the top-level CLI). Everything
after ``--`` is a program to wrap: it starts once the files are written,
receives forwarded signals and ``renew_signal`` on rotation, and its exit code
becomes ours. Exit codes: 0 ok, 1 runtime failure, 2 configuration error,
3 agent unavailable, 4 no identity issued, 5 write error (3-5 in one-shot mode).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from spiffe_bridge.cli.argtypes import boolean
from spiffe_bridge.cli.main import summary
from spiffe_bridge.sidecar.config import DEFAULT_CONFIG_FILE, Config, ConfigError, load
from spiffe_bridge.sidecar.exitcodes import EXIT_CONFIG

log = logging.getLogger("spiffe_bridge.sidecar")


def add_parser(subparsers: Any) -> None:
    """Register the ``run`` subcommand."""
    parser = subparsers.add_parser(
        "run",
        help=summary("run"),
        description=(
            "Keep SVIDs and bundles in files for a consumer and reload it on every rotation. Reads "
            "spiffe-helper's helper.conf unchanged (or TOML/JSON). After --, a program to run once the "
            "files exist; it gets forwarded signals and renew_signal, and its exit code becomes ours. "
            "Exit codes: 0 ok, 1 runtime failure, 2 configuration error; one-shot: 3 agent unavailable, "
            "4 no identity issued, 5 files could not be written."
        ),
    )
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG_FILE,
        help="configuration file: HCL, .toml or .json (default %(default)s)",
    )
    parser.add_argument(
        "--daemon-mode",
        type=boolean,
        nargs="?",
        const=True,
        default=None,
        metavar="BOOL",
        help="override daemon_mode from the file (-daemon-mode=false: write once and exit)",
    )
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit (0 or 2)")
    parser.add_argument(
        "wrapped", nargs="*", metavar="PROGRAM", help="after --: a program to run and supply (wrapper mode)"
    )


def _prepare(args: argparse.Namespace) -> tuple[Config, list[Any]] | int:
    """Load config, set up logging, build the plans; an exit code on configuration errors."""
    from spiffe_bridge import logs
    from spiffe_bridge.sidecar import plan

    level, fmt = getattr(args, "log_level", None), getattr(args, "log_format", None)
    try:
        config = load(args.config, daemon_mode=args.daemon_mode)
    except ConfigError as exc:
        logs.setup(level or "info", fmt or "text")
        log.error("configuration error: %s", exc)
        return EXIT_CONFIG
    # the command line overrides the file's log_level / log_format
    logs.setup(level or config.log_level, fmt or config.log_format)
    for warning in config.warnings:
        log.warning("%s: %s", config.source, warning)
    try:
        plans, warnings = plan.build(config, os.environ)
        if args.wrapped and config.cmd:
            raise ConfigError("'cmd' and a wrapped program after '--' cannot be used together")
        if args.wrapped and not config.daemon_mode:
            raise ConfigError("wrapping a program after '--' needs daemon mode")
    except ConfigError as exc:
        log.error("configuration error: %s: %s", config.source, exc)
        return EXIT_CONFIG
    for warning in warnings:
        log.warning("%s: %s", config.source, warning)
    return config, plans


def run(args: argparse.Namespace) -> int:
    """Run the sidecar in daemon, wrapper or one-shot mode; return the exit code."""
    prepared = _prepare(args)
    if isinstance(prepared, int):
        return prepared
    config, plans = prepared
    if args.check:
        print(f"{config.source}: configuration is valid", file=sys.stderr)
        return 0
    if not config.daemon_mode:
        from spiffe_bridge.sidecar.oneshot import OneShot

        code = OneShot(config, plans).run()
        # The files are written and fsync'd; skip interpreter and gRPC teardown (0.1-0.2 s),
        # which sits on an init container's critical path.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    from spiffe_bridge.sidecar.runner import Daemon

    return Daemon(config, plans, wrapper_argv=args.wrapped).run()
