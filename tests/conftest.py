"""Fixtures for every test directory (shared helpers are modules in ``tests/_support``).

Conftest files hold only fixtures and hooks: pytest imports each of them as a module
named ``conftest``, so a test that imported names from one would get whichever
directory's conftest came last. Helpers live in importable modules instead
(``_support.*`` for the whole suite, ``<dir>_helpers``-style modules for one directory).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture
def tmp_short() -> Iterator[str]:
    """A fresh directory under /tmp with a short path (Unix socket paths must stay < 108 bytes)."""
    directory = tempfile.mkdtemp(prefix="sbt-", dir="/tmp")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
