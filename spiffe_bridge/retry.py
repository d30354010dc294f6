"""Reconnect policy: capped exponential backoff with full jitter (tenacity).

Which failures are retried follows the endpoint spec's Appendix A: retry
Unavailable, PermissionDenied, stream end and connection errors; stop on
InvalidArgument and Unimplemented (see ``WorkloadApiError.retryable``).
Waiting for a missing or restarting socket is gRPC's job (``wait_for_ready``
with a short reconnect backoff), so a returning agent is picked up within
~0.25 s without polling in Python.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before reconnect attempt ``n`` (1-based): uniform in [0, min(max, initial*2**(n-1))].

    The first retry after a stream simply ended is immediate (``first_delay``),
    as the Workload API spec asks clients to reconnect at once.
    """

    initial: float = 0.2
    maximum: float = 30.0
    first_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.first_delay < 0:
            raise ValueError("backoff needs 0 < initial <= maximum and first_delay >= 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before the given reconnect attempt."""
        if attempt <= 1:
            return self.first_delay
        import tenacity  # here, not at module level: it costs ~20 ms of every CLI start-up

        wait = tenacity.wait_random_exponential(multiplier=self.initial, max=self.maximum)
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = attempt - 1
        return float(wait(state))


#: gRPC's own channel reconnect backoff: short, so a restarted agent is seen at once.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_http_proxy", 0),
)
