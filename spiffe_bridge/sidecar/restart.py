"""An output's ``restart_command``: restart a consumer that reads its files only at start.

linkerd2-proxy parses its trust anchors once, so a ``linkerd`` output's new
``linkerd.env`` means nothing to a running proxy until it is restarted
(``systemctl try-restart linkerd-proxy.service``). The command runs through the
output's hot updates (:mod:`spiffe_bridge.sidecar.hot_updates`: off the daemon's
loop, recorded in the status, tried again after a failure) after each write that
changed the output's files, except the one that first creates them in a
directory holding none of them: the consumer starts after those. ``OUTPUT_KEYS``
declares the keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from spiffe_bridge.sidecar.actions import MAX_COMMAND_SECONDS, RunCommand
from spiffe_bridge.sidecar.schema import ConfigError, Key, parse_duration, where

ACTION = "restart_command"
DEFAULT_TIMEOUT = 120.0
OUTPUT_KEYS = (
    Key(
        ACTION,
        "str_list",
        [],
        "Argv (no shell) run after this output's files changed, for a consumer that reads them only at "
        'start: a `linkerd` output takes `["systemctl", "try-restart", "linkerd-proxy.service"]` '
        "(the proxy parses its trust anchors once; an SVID rotation leaves the output unchanged). Not "
        "run by the write that first creates the files in a directory holding none of them (files an "
        "earlier run left that differ do count as a change). Daemon mode; runs like the `reload_*` "
        "actions (off the loop, counted, tried again after a failure), each run killed after "
        "`restart_timeout`.",
        ours=True,
    ),
    Key(
        "restart_timeout",
        "duration",
        DEFAULT_TIMEOUT,
        f"`restart_command` is killed after this long (0, or more than {MAX_COMMAND_SECONDS / 60:g} "
        f"minutes, means {MAX_COMMAND_SECONDS / 60:g} minutes: no restart runs unbounded).",
        ours=True,
    ),
)
KEYS = frozenset(key.name for key in OUTPUT_KEYS)


def from_output(
    options: Mapping[str, Any], lines: Mapping[str, int], line: int | None
) -> tuple[tuple[str, ...], float] | None:
    """``(argv, timeout)`` when an ``outputs`` entry sets ``restart_command``; ConfigError naming the key."""
    if ACTION not in options:
        if "restart_timeout" in options:
            at = where("restart_timeout", lines.get("restart_timeout", line))
            raise ConfigError(f"{at} needs {ACTION}")
        return None
    argv = options[ACTION]
    at = where(ACTION, lines.get(ACTION, line))
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ConfigError(f"{at} must be a non-empty list of strings (an argv), got {argv!r}")
    timeout = DEFAULT_TIMEOUT
    if "restart_timeout" in options:
        timeout = parse_duration(
            options["restart_timeout"], "restart_timeout", lines.get("restart_timeout", line)
        )
    if timeout <= 0 or timeout > MAX_COMMAND_SECONDS:
        timeout = MAX_COMMAND_SECONDS
    return tuple(argv), timeout


def names_in(directory: str) -> frozenset[str]:
    """The entries of ``directory`` now (none if it does not exist): what a first write would replace."""
    try:
        return frozenset(os.listdir(directory))
    except OSError:
        return frozenset()


def creates(before: frozenset[str], names: Sequence[str]) -> bool:
    """True when a set with these file names replaced none of the entries found ``before`` it."""
    return not any(name.split("/")[0] in before for name in names)


async def run(argv: Sequence[str], timeout: float) -> str | None:
    """Run the restart command once, logged like ``reload_command``; None on success, else why not."""
    return await RunCommand(argv, timeout, what=ACTION).run()
