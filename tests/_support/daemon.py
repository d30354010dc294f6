"""The sidecar daemon in-process, on a thread of the test, stopped and checked at the end."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

#: How long a stopped daemon may take to return from ``run()``.
JOIN_SECONDS = 15.0


@contextlib.contextmanager
def in_process(config: Any = None, *, daemon: Any = None, join: float = JOIN_SECONDS) -> Iterator[Any]:
    """Run a :class:`~spiffe_bridge.sidecar.runner.Daemon` for ``config`` (or the given ``daemon``).

    On leaving, the daemon is asked to stop, and it must return 0 within ``join`` seconds.
    """
    if daemon is None:
        from spiffe_bridge.sidecar import plan
        from spiffe_bridge.sidecar.runner import Daemon

        plans, _ = plan.build(config, {})
        daemon = Daemon(config, plans)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run()), daemon=True)
    thread.start()
    try:
        yield daemon
    finally:
        daemon.request_stop()
        thread.join(join)
        assert codes == [0], "the daemon did not stop on request"
