"""The retry helpers on tenacity: one set of stop codes, deadlines, wake-up, custom predicates."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

from spiffe_bridge.errors import (
    AgentUnavailableError,
    InvalidArgumentError,
    NoIdentityError,
    StreamEndedError,
    UnimplementedError,
    WorkloadApiError,
)
from spiffe_bridge.retry import STOP_CODES, Backoff, async_retrying, retries, retrying

FAST = Backoff(initial=0.001, maximum=0.002)


def test_stop_codes_are_the_specs() -> None:
    assert {"INVALID_ARGUMENT", "UNIMPLEMENTED"} == STOP_CODES
    assert retries(AgentUnavailableError("x", code=grpc.StatusCode.UNAVAILABLE))
    assert retries(NoIdentityError("x", code=grpc.StatusCode.PERMISSION_DENIED))
    assert retries(StreamEndedError("x"))
    assert retries(WorkloadApiError("x", code=grpc.StatusCode.INTERNAL))
    assert not retries(InvalidArgumentError("x", code=grpc.StatusCode.INVALID_ARGUMENT))
    assert not retries(InvalidArgumentError("raised without a code"))
    assert not retries(UnimplementedError("x"))
    assert not retries(WorkloadApiError("an unmapped code", code=grpc.StatusCode.UNIMPLEMENTED))
    assert not retries(OSError("not a Workload API failure"))


def test_backoff_is_a_tenacity_wait() -> None:
    calls = []
    for attempt in retrying(FAST, before_sleep=lambda exc, delay: calls.append(delay)):
        with attempt:
            if attempt.retry_state.attempt_number < 4:
                raise AgentUnavailableError("down")
    assert len(calls) == 3 and calls[0] == 0.0 and all(0 <= d <= 0.002 for d in calls)


async def test_async_retrying_stops_at_a_non_retryable_code() -> None:
    tries = 0
    with pytest.raises(InvalidArgumentError):
        async for attempt in async_retrying(FAST):
            with attempt:
                tries += 1
                raise InvalidArgumentError("bad request", code=grpc.StatusCode.INVALID_ARGUMENT)
    assert tries == 1


async def test_async_retrying_deadline_reraises_the_last_failure() -> None:
    slow = Backoff(initial=10.0, maximum=10.0)  # only the deadline can cut these waits
    started = time.monotonic()
    tries = 0
    with pytest.raises(AgentUnavailableError, match="still down"):
        async for attempt in async_retrying(slow, deadline=started + 0.3):
            with attempt:
                tries += 1
                raise AgentUnavailableError("still down")
    assert time.monotonic() - started < 5
    assert tries >= 2  # the wait was cut to the deadline, then one last attempt ran


async def test_async_retrying_custom_predicate_and_wake() -> None:
    wake = asyncio.Event()
    slow = Backoff(initial=60.0, maximum=60.0, first_delay=60.0)
    tries = 0
    async for attempt in async_retrying(slow, retry_on=lambda e: isinstance(e, OSError), wake=wake):
        with attempt:
            tries += 1
            if tries == 1:
                asyncio.get_running_loop().call_soon(wake.set)  # ends the 60 s wait at once
                raise OSError("disk full")
    assert tries == 2
    with pytest.raises(ValueError):  # not retried: the predicate says OSError only
        async for attempt in async_retrying(FAST, retry_on=lambda e: isinstance(e, OSError)):
            with attempt:
                raise ValueError("a bug")


def test_sync_wake_ends_a_wait() -> None:
    wake = threading.Event()
    slow = Backoff(initial=60.0, maximum=60.0, first_delay=60.0)
    threading.Timer(0.05, wake.set).start()
    started = time.monotonic()
    tries = 0
    for attempt in retrying(slow, wake=wake):
        with attempt:
            tries += 1
            if tries == 1:
                raise StreamEndedError("ended")
    assert tries == 2 and time.monotonic() - started < 30
