"""Timeout, retries with backoff, and the error every updater raises when it gives up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from spiffe_bridge.errors import SpiffeBridgeError
from spiffe_bridge.retry import Backoff

log = logging.getLogger("spiffe_bridge.updaters")
T = TypeVar("T")


class UpdateError(SpiffeBridgeError):
    """A server did not take the new credentials; ``retryable`` False means trying again cannot help."""

    def __init__(self, action: str, target: str, reason: str, *, retryable: bool = True) -> None:
        super().__init__(f"{action} {target}: {reason}")
        self.action, self.target, self.reason, self.retryable = action, target, reason, retryable
        self.attempts = 0


@dataclass(frozen=True)
class UpdatePolicy:
    """Each attempt is cut off after ``timeout`` seconds; up to ``attempts`` tries, backoff between."""

    timeout: float = 10.0
    attempts: int = 3
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.2, maximum=5.0, first_delay=0.1))

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.attempts < 1:
            raise ValueError("an update policy needs timeout > 0 and attempts >= 1")


async def with_retries(
    action: str, target: str, operation: Callable[[], Awaitable[T]], policy: UpdatePolicy
) -> T:
    """Run ``operation`` until it succeeds, a non-retryable UpdateError, or the attempts run out."""
    last: UpdateError | None = None
    for attempt in range(1, policy.attempts + 1):
        if attempt > 1:
            await asyncio.sleep(policy.backoff.delay(attempt))
        try:
            return await asyncio.wait_for(operation(), policy.timeout)
        except UpdateError as exc:
            last = exc
        except TimeoutError:
            last = UpdateError(action, target, f"no answer within {policy.timeout}s")
        except OSError as exc:
            last = UpdateError(action, target, exc.strerror or str(exc) or type(exc).__name__)
        last.attempts = attempt
        if not last.retryable:
            break
        log.warning("%s (attempt %d of %d)", last, attempt, policy.attempts)
    assert last is not None
    raise last
