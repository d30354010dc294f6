"""Why a broker-mode output is not ready, as /ready and the log say it (sidecar.broker_outputs)."""

from __future__ import annotations

import pytest

from spiffe_bridge.errors import (
    AgentUnavailableError,
    WorkloadExitedError,
    WorkloadNotEntitledError,
    WorkloadNotFoundError,
)
from spiffe_bridge.sidecar.broker_outputs import WorkloadUpdate, not_ready_reason


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (WorkloadNotEntitledError("no SVIDs for pid 7"), "NoIdentity: no SVIDs for pid 7"),
        (WorkloadExitedError("the referenced process (pid 7) has exited"), "process exited: "),
        (WorkloadNotFoundError("pid 7 does not exist"), "process exited: "),
        (LookupError("no PID in /run/nginx.pid"), "no workload process: no PID in /run/nginx.pid"),
        (AgentUnavailableError("connection refused"), "unavailable: "),
    ],
)
def test_reason_names_the_kind_and_the_detail(error: Exception, reason: str) -> None:
    text = not_ready_reason(WorkloadUpdate(0, 7, None, error))
    assert text.startswith(reason) and str(error) in text
