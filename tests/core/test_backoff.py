"""Backoff delays: immediate first retry, then capped exponential with full jitter."""

from __future__ import annotations

import pytest

from spiffe_bridge.retry import Backoff


def test_first_retry_is_immediate() -> None:
    assert Backoff().delay(1) == 0.0
    assert Backoff(first_delay=0.5).delay(1) == 0.5


def test_delays_are_jittered_and_capped() -> None:
    b = Backoff(initial=0.1, maximum=1.0)
    for attempt in range(2, 30):
        bound = min(1.0, 0.1 * 2 ** (attempt - 2))
        samples = {b.delay(attempt) for _ in range(20)}
        assert all(0 <= s <= bound + 1e-9 for s in samples)
        assert len(samples) > 1  # jitter: not a fixed schedule


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=0)
    with pytest.raises(ValueError):
        Backoff(initial=2, maximum=1)
