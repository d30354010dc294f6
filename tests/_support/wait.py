"""Polling for conditions that send no event: the suite's one ``wait_until``.

Prefer an event (a queue, a ``threading.Condition``, a source callback) when the
code under test offers one; poll only for outside effects such as a file that
appears, a port that answers or a process that exits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Default deadline in seconds: generous, since a loaded 2-core CI machine is slow.
DEADLINE = 15.0


def wait_until(
    condition: Callable[[], T],
    what: str,
    timeout: float = DEADLINE,
    *,
    interval: float = 0.02,
    ignore: tuple[type[BaseException], ...] = (),
    fatal: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] | None = None,
    error: type[Exception] = AssertionError,
) -> T:
    """Poll ``condition`` until it returns something truthy and return that value.

    Exceptions of the ``ignore`` types count as "not yet" (a file mid-replace, a socket
    not listening yet) unless they are also ``fatal`` ones, which end the wait at once;
    the last ignored one is named in the message. At the deadline raise
    ``error`` (AssertionError: the test fails) saying ``what`` was awaited, plus ``detail()``.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        value: Any = None
        try:
            value = condition()
        except fatal:
            raise
        except ignore as exc:
            last_exc = exc
        if value:
            return value  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:.1f}s waiting for {what}"
            if last_exc is not None:
                message += f" (last error: {last_exc!r})"
            if detail is not None:
                message += f"\n{detail()}"
            raise error(message)
        time.sleep(interval)
