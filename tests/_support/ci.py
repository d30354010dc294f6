"""The one rule for a missing test dependency: skip locally, fail under CI.

``.ci/run`` exports ``CI=true`` before ``make test``: there every dependency is
installed on purpose, so a binary, tool or privilege that is missing is a broken
run, not a reason to skip. Everywhere else the test skips and says how to get it.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import pytest

F = TypeVar("F", bound=Callable[..., Any])

#: Where Debian keeps daemons (nginx, haproxy, mariadbd...) that are not on a user's PATH.
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def in_ci() -> bool:
    """True under ``CI=true`` (also ``1`` or ``yes``), as ``.ci/run`` sets it."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(reason: str) -> NoReturn:
    """Skip the calling test for ``reason``; under CI fail it instead."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def require(available: object, reason: str) -> None:
    """Go on when ``available`` is truthy; else skip (under CI fail) for ``reason``."""
    if not available:
        missing(reason)


def require_binary(name: str, how: str = "run scripts/install-system-deps.sh") -> str:
    """Path of ``name`` on PATH or in the sbin directories; skip (CI: fail) saying ``how`` to get it."""
    found = shutil.which(name) or shutil.which(name, path=SBIN)
    if found is None:
        missing(f"{name} not installed: {how}")
    return found


def needs(available: object, reason: str) -> Callable[[F], F]:
    """Decorate a test that needs something: as is when ``available``, else skipped (CI: failed).

    The decorator form of :func:`require`, where ``pytest.mark.skipif`` would skip under CI too.
    """

    def mark(test: F) -> F:
        if available:
            return test
        if not in_ci():
            return pytest.mark.skip(reason=reason)(test)  # type: ignore[no-any-return]

        @functools.wraps(test)
        def fails(*_args: Any, **_kwargs: Any) -> None:
            pytest.fail(f"CI=true and {reason}", pytrace=False)

        return fails  # type: ignore[return-value]

    return mark
