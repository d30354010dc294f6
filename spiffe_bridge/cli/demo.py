"""``spiffe-bridge demo``: argument wiring for :class:`spiffe_bridge.demo.Demo`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from spiffe_bridge.cli.main import summary


def add_parser(subparsers: Any) -> None:
    """Register the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help=summary("demo"),
        description="Start a stand-in Workload API agent (the embedded dev agent, not SPIRE) on a "
        "temporary socket, run the real sidecar against it with every output format, force one "
        "rotation and check that every file set switched atomically and verifies.",
    )
    parser.add_argument(
        "--dir", default="spiffe-bridge-demo", help="output directory (default ./%(default)s)"
    )
    parser.add_argument("--verbose", action="store_true", help="show the sidecar's log")


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every check passed."""
    if getattr(args, "log_level", None) is None:  # the CLI set up logging; --verbose picks the level
        logging.getLogger().setLevel(logging.INFO if args.verbose else logging.WARNING)
    from spiffe_bridge.demo import Demo

    return Demo(Path(args.dir).resolve()).run()
