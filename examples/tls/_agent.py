"""Where the examples get their identities: $SPIFFE_ENDPOINT_SOCKET, else an embedded dev agent.

The agent must serve two SVIDs with hints ``server`` and ``client`` (the
server's with DNS SAN ``localhost`` for gRPC), e.g.::

    spiffe-bridge dev-agent --socket /tmp/agent.sock \
        --spiffe-id 'spiffe://example.org/server#server' \
        --spiffe-id 'spiffe://example.org/client#client' --dns-name localhost
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

SERVER_ID = "spiffe://example.org/server"
CLIENT_ID = "spiffe://example.org/client"


@contextlib.contextmanager
def workload_api() -> Iterator[tuple[str, Any]]:
    """Yield (address, dev agent or None). The dev agent lets demos trigger rotations."""
    address = os.environ.get("SPIFFE_ENDPOINT_SOCKET")
    if address:
        yield address, None
        return
    from spiffe_bridge.devagent import DevAgent, Identity

    with tempfile.TemporaryDirectory(prefix="sb-tls-", dir="/tmp") as directory:
        identities = [
            Identity(SERVER_ID, hint="server", dns_names=("localhost",)),
            Identity(CLIENT_ID, hint="client"),
        ]
        with DevAgent(os.path.join(directory, "agent.sock"), identities=identities) as agent:
            print(f"(embedded dev agent on {agent.address}; set SPIFFE_ENDPOINT_SOCKET to use yours)")
            yield agent.address, agent
