"""One-shot mode (``daemon_mode = false``): wait for the agent and an identity, write once, exit.

Made for init containers: the socket may appear late and the registration
entry may not be there yet, so both are waited for (capped backoff) until
``one_shot_timeout``. The exit code says what went wrong:

* 0 -- every configured file was written
* 3 -- the agent never answered before the deadline (no socket, Unavailable)
* 4 -- the agent answered but issued no identity before the deadline
  (PermissionDenied, or no SVID with the configured hint)
* 5 -- the files could not be written (or rendered)
* 128+n -- interrupted by signal n before the files were written

(2, a configuration error, is decided before this module runs.)
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from spiffe_bridge.client.sync import WorkloadClient
from spiffe_bridge.errors import NoIdentityError, NotReadyError, SpiffeBridgeError, WorkloadApiError
from spiffe_bridge.fileset import WriteError
from spiffe_bridge.formats import FormatError
from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.retry import Backoff
from spiffe_bridge.sidecar.config import Config, JwtSvidConfig
from spiffe_bridge.sidecar.exitcodes import EXIT_NO_IDENTITY, EXIT_OK, EXIT_UNAVAILABLE, EXIT_WRITE
from spiffe_bridge.sidecar.plan import DirPlan
from spiffe_bridge.sources import JwtSource, X509Source
from spiffe_bridge.sources.state import SourceState, SourceStatus
from spiffe_bridge.x509context import X509Context

if TYPE_CHECKING:  # broker mode loads the Broker API client only when used
    from spiffe_bridge.sidecar.broker_outputs import Issued

log = logging.getLogger("spiffe_bridge.sidecar")

#: Reconnect/retry backoff in one-shot mode: start fast, never wait more than 2 s between tries.
BACKOFF = Backoff(initial=0.1, maximum=2.0)


class _Interrupted(BaseException):
    """SIGTERM/SIGINT while waiting; a BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way (a logging handler's, say) swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _GaveUp(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@contextmanager
def _interruptible() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into an exception while waiting (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise _Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _classify(state: SourceState[Any], what: str, timeout: float) -> _GaveUp:
    err = state.last_error
    if state.status is SourceStatus.IDENTITY_LOST or isinstance(err, NoIdentityError):
        return _GaveUp(EXIT_NO_IDENTITY, f"no {what} issued within {timeout:g}s: {err}")
    if state.status is SourceStatus.READY:
        return _GaveUp(EXIT_NO_IDENTITY, f"no {what} with the configured hint within {timeout:g}s")
    detail = f": {err}" if err else " (no answer; does the socket exist?)"
    return _GaveUp(EXIT_UNAVAILABLE, f"the Workload API did not answer within {timeout:g}s{detail}")


class OneShot:
    """Fetch everything the configuration needs before ``deadline``, then write it."""

    def __init__(self, config: Config, plans: Sequence[DirPlan], clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.plans = list(plans)
        self.clock = clock
        self.deadline = clock() + config.one_shot_timeout

    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(self.deadline - self.clock(), 0.0)

    def run(self) -> int:
        """Return the exit code (see the module docstring)."""
        try:
            with _interruptible():
                log.info(
                    "one-shot: waiting up to %gs for the Workload API at %s",
                    self.config.one_shot_timeout,
                    self.config.agent_address,
                )
                return self._run()
        except _Interrupted as exc:
            log.warning("interrupted by %s before the files were written", signal.Signals(exc.signum).name)
            return 128 + exc.signum
        except _GaveUp as exc:
            log.error("%s", exc)
            return exc.code

    def _run(self) -> int:
        from spiffe_bridge.address import resolve, unreachable_reason

        reason = unreachable_reason(resolve(self.config.agent_address))
        if reason:  # waiting cannot cure it: say so now, not after one_shot_timeout
            raise _GaveUp(EXIT_UNAVAILABLE, f"the Workload API socket cannot be opened: {reason}")
        client = WorkloadClient(self.config.agent_address, backoff=BACKOFF)
        try:
            ctx = self._x509(client) if self.config.needs_x509 else None
            bundles, tokens = self._jwt(client) if self.config.jwt_enabled else (None, {})
        finally:
            client.close()
        workloads = self._workloads() if any(p.workload is not None for p in self.plans) else {}
        try:
            for plan in self.plans:
                if plan.workload is not None:  # broker mode: the referenced workload's own SVID
                    issued = workloads[plan.workload]
                    files = plan.render(issued.context, issued.tokens, None)
                    if files:
                        plan.writer().write(files)
                    continue
                files = plan.render(ctx, tokens, bundles)
                if files:
                    plan.writer().write(files)
        except (WriteError, FormatError, OSError, ValueError) as exc:
            log.error("writing the files failed: %s", exc)
            return EXIT_WRITE
        log.info("files written; exiting (daemon_mode = false)")
        return EXIT_OK

    def _x509(self, client: WorkloadClient) -> X509Context:
        hints = {out.options.hint for plan in self.plans for out in plan.x509}

        def has_hints(ctx: X509Context) -> bool:
            return all(any(s.hint == h for s in ctx.svids) for h in hints if h)

        source = X509Source(client=client, timeout=0)
        try:
            return source.wait_for(has_hints, timeout=self.remaining())
        except NotReadyError:
            raise _classify(source.state, "X.509-SVID", self.config.one_shot_timeout) from None
        finally:
            source.close()

    def _workloads(self) -> dict[int, Issued]:
        """Broker mode: each workload output's context and tokens through the Broker API (docs/broker.md)."""
        import asyncio

        from spiffe_bridge.sidecar.broker_outputs import fetch_once, token_specs
        from spiffe_bridge.sources import AsyncX509Source

        async def fetch() -> dict[int, Issued]:
            async with AsyncX509Source(self.config.agent_address, timeout=self.remaining()) as own:
                return await fetch_once(self.config, own, self.remaining(), token_specs(self.plans))

        try:
            return asyncio.run(fetch())
        except NoIdentityError as exc:
            raise _GaveUp(EXIT_NO_IDENTITY, f"broker: no identity for a workload output: {exc}") from None
        except (WorkloadApiError, NotReadyError) as exc:
            raise _GaveUp(EXIT_UNAVAILABLE, f"broker: the Broker API did not answer in time: {exc}") from None

    def _jwt(self, client: WorkloadClient) -> tuple[JwtBundleSet | None, dict[str, JwtSvid]]:
        bundles = None
        if self.config.jwt_bundle_file_name:
            source = JwtSource(client=client, timeout=0)
            try:
                bundles = source.wait_for(None, timeout=self.remaining())
            except NotReadyError:
                raise _classify(source.state, "JWT bundle", self.config.one_shot_timeout) from None
            finally:
                source.close()
        tokens = {spec.file_name: self._fetch_token(client, spec) for spec in self.config.jwt_svids}
        return bundles, tokens

    def _fetch_token(self, client: WorkloadClient, spec: JwtSvidConfig) -> JwtSvid:
        """Mint one JWT-SVID, retrying (capped backoff) until the deadline; extra audiences honoured."""
        attempt = 0
        last: Exception | None = None
        hint = self.config.hint or None
        while self.remaining() > 0:
            try:
                return client.fetch_jwt_svid(
                    spec.audience, *spec.extra_audiences, hint=hint, timeout=max(self.remaining(), 0.05)
                )
            except WorkloadApiError as exc:
                if not exc.retryable:
                    raise _GaveUp(EXIT_UNAVAILABLE, f"JWT-SVID for {spec.audience!r}: {exc}") from None
                last = exc
            except (SpiffeBridgeError, LookupError) as exc:
                last = exc
            attempt += 1
            time.sleep(min(BACKOFF.delay(attempt + 1), self.remaining()))
        timeout = self.config.one_shot_timeout
        if isinstance(last, NoIdentityError | LookupError):
            raise _GaveUp(EXIT_NO_IDENTITY, f"no JWT-SVID for {spec.audience!r} within {timeout:g}s: {last}")
        raise _GaveUp(EXIT_UNAVAILABLE, f"no JWT-SVID for {spec.audience!r} within {timeout:g}s: {last}")
