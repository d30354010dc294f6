"""The ``spiffe-bridge`` command line: argument wiring only, one module per command.

:mod:`.main` dispatches to the command's module (``fetch``, ``run``, ``relay``,
``dev_agent``, ``inspect``, ``doctor``, ``watch``, ``validate``, ``linkerd_env``,
``demo``), imported only when that command runs; :mod:`.argtypes` holds the
argument types they share. What the commands do lives in the library packages.
"""

from __future__ import annotations

from spiffe_bridge.cli.main import main

__all__ = ["main"]
