"""Retry policy on tenacity: which failures retry, full-jitter exponential waits, deadlines.

Which failures are retried follows the endpoint spec's Appendix A and is stated
once, here (``STOP_CODES``): retry Unavailable, PermissionDenied, stream end
and connection errors; stop on InvalidArgument and Unimplemented. The stream
supervisors of both clients, and any caller that retries (the sidecar's write
retry and one-shot deadline), build their loop with ``async_retrying`` /
``retrying``. Waiting for a missing or restarting socket is gRPC's job
(``wait_for_ready`` with a short reconnect backoff), so a returning agent is
picked up within ~0.25 s without polling in Python.

tenacity is imported on first use, not here: it costs ~20 ms of every CLI start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tenacity

#: gRPC status codes (by name) the endpoint spec says not to retry; every other failure retries.
STOP_CODES: frozenset[str] = frozenset({"INVALID_ARGUMENT", "UNIMPLEMENTED"})


def code_retries(code_name: str | None) -> bool:
    """True unless the gRPC code (by name; None for local causes) is one of ``STOP_CODES``."""
    return code_name not in STOP_CODES


def retries(exc: BaseException) -> bool:
    """The default retry predicate: a Workload API failure whose code the spec says to retry."""
    from spiffe_bridge.errors import WorkloadApiError

    return isinstance(exc, WorkloadApiError) and exc.retryable


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before attempt ``n`` (1-based): uniform in [0, min(maximum, initial * 2**(n-2))].

    Full-jitter exponential backoff. The first retry after a stream simply ended
    is immediate (``first_delay``), as the Workload API spec asks clients to
    reconnect at once. An instance is also a tenacity ``wait`` strategy.
    """

    initial: float = 0.2
    maximum: float = 30.0
    first_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.first_delay < 0:
            raise ValueError("backoff needs 0 < initial <= maximum and first_delay >= 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before the given attempt."""
        if attempt <= 1:
            return self.first_delay
        bound = min(self.maximum, self.initial * 2.0 ** min(attempt - 2, 64))
        return random.uniform(0.0, bound)  # noqa: S311 -- jitter, not a secret

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        """tenacity wait: the delay before the attempt after ``retry_state.attempt_number``."""
        return self.delay(retry_state.attempt_number)


def _policy(
    backoff: Backoff,
    retry_on: Callable[[BaseException], bool],
    deadline: float | None,
    before_sleep: Callable[[Exception, float], None] | None,
) -> dict[str, Any]:
    """tenacity arguments shared by the sync and async loops."""
    import tenacity

    def wait(state: tenacity.RetryCallState) -> float:
        delay = backoff(state)
        return delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic()))

    def stop(state: tenacity.RetryCallState) -> bool:
        return deadline is not None and time.monotonic() >= deadline

    def hook(state: tenacity.RetryCallState) -> None:
        if before_sleep is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if isinstance(exc, Exception):
                before_sleep(exc, state.upcoming_sleep)

    return {
        "wait": wait,
        "stop": stop,
        "retry": tenacity.retry_if_exception(retry_on),
        "before_sleep": hook,
        "reraise": True,
    }


def async_retrying(
    backoff: Backoff,
    *,
    retry_on: Callable[[BaseException], bool] = retries,
    deadline: float | None = None,
    wake: asyncio.Event | None = None,
    before_sleep: Callable[[Exception, float], None] | None = None,
) -> tenacity.AsyncRetrying:
    """A tenacity ``AsyncRetrying`` with this project's policy; the last failure is re-raised as is.

    ``retry_on``: which exceptions retry (default ``retries``: the spec's gRPC codes;
    pass e.g. ``lambda e: isinstance(e, OSError)`` for a write retry). ``deadline``:
    a ``time.monotonic()`` value after which no attempt starts; waits are cut so the
    last attempt runs at the deadline. ``wake``: an event that ends a wait early
    (set it on shutdown, then check it in the attempt). ``before_sleep(exc, delay)``:
    called before each wait, e.g. to log. Use it as::

        async for attempt in async_retrying(backoff, deadline=time.monotonic() + 5):
            with attempt:
                await do_it()
    """
    import tenacity

    async def sleep(seconds: float) -> None:
        if wake is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds)

    sleeper: Callable[[float], Awaitable[None]] = sleep
    return tenacity.AsyncRetrying(sleep=sleeper, **_policy(backoff, retry_on, deadline, before_sleep))


def retrying(
    backoff: Backoff,
    *,
    retry_on: Callable[[BaseException], bool] = retries,
    deadline: float | None = None,
    wake: threading.Event | None = None,
    before_sleep: Callable[[Exception, float], None] | None = None,
) -> tenacity.Retrying:
    """The blocking twin of ``async_retrying`` (``wake`` is a ``threading.Event``)."""
    import tenacity

    def sleep(seconds: float) -> None:
        if wake is None:
            time.sleep(seconds)
        else:
            wake.wait(seconds)

    return tenacity.Retrying(sleep=sleep, **_policy(backoff, retry_on, deadline, before_sleep))


#: gRPC's own channel reconnect backoff: short, so a restarted agent is seen at once.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_http_proxy", 0),
)
