"""The relay under hostile upstream messages: what it serves, and what its clients keep, stays valid.

Hypothesis edits valid X509SVIDResponses (bad DER, wrong keys, foreign chains, bad IDs, ...)
and the dev agent pushes each one, then a valid sentinel, to the relay; an X509Source reads
through the relay. By default the relay never forwards an invalid message; with
forward_before_verify it hands every message on at once and takes invalid ones back. Either
way the relay must end up serving the sentinel, count the invalid message, keep its
streams open, and the client must only ever hold valid contexts.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from _support.pki import svid_message
from fuzz_material import hostile_x509_response, pool
from hypothesis import given
from reliability_support import FAST, context_problems, examples

from spiffe_bridge import X509Source
from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.client import decode_x509_context
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.errors import ValidationError
from spiffe_bridge.relay import Kind, Relay
from spiffe_bridge.x509context import X509Context

X509 = "FetchX509SVID"


class Held:
    """Subscriber recording problems of every context the client handed out."""

    def __init__(self) -> None:
        self.count = 0
        self.problems: list[str] = []

    def __call__(self, ctx: X509Context) -> None:
        self.count += 1
        self.problems += context_problems(ctx)


def _invalid(msg: Any) -> bool:
    try:
        decode_x509_context(msg)
    except ValidationError:
        return True
    return False


@pytest.mark.parametrize("forward_first", [True, False], ids=["forward-first", "verify-first"])
@pytest.mark.dev_agent(trust_domain="example.org")
def test_fuzz_through_the_relay(
    dev_agent: DevAgent, tmp_short: str, forward_first: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("ERROR", logger="spiffe_bridge")  # a warning per invalid update is expected
    p = pool()
    sentinels = [
        pb.X509SVIDResponse(svids=[svid_message(p.ca, f"spiffe://example.org/sentinel-{n}")]) for n in "ab"
    ]
    digests = [decode_x509_context(s).digest for s in sentinels]
    flip = [0]
    held = Held()
    address = "unix://" + os.path.join(tmp_short, "relay.sock")
    with Relay(dev_agent.address, address, forward_before_verify=forward_first) as relay:
        relay.wait_serving()
        with X509Source(relay.address, backoff=FAST, timeout=10) as source:
            source.subscribe(held)

            @examples(60)
            @given(msg=hostile_x509_response())
            def run(msg: Any) -> None:
                invalid = _invalid(msg)
                before = relay.stats().feeds[X509].invalid_updates
                rejected = source.state.rejected
                flip[0] ^= 1
                sentinel = sentinels[flip[0]]
                assert dev_agent.push_raw(X509, msg) == 1
                assert dev_agent.push_raw(X509, sentinel) == 1
                source.wait_for(lambda c: c.digest == digests[flip[0]], timeout=10)
                served = relay.wait_until(
                    lambda s: s.payload is not None and pb.X509SVIDResponse.FromString(s.payload) == sentinel,
                    Kind.X509_SVID,
                )
                assert served.serving and not served.upstream_lost
                assert relay.stats().feeds[X509].invalid_updates == before + int(invalid)
                # The client saw the invalid message only when the relay forwarded it first,
                # and rejected it itself.
                seen = invalid and forward_first
                assert source.state.rejected == rejected + int(seen)

            run()
        assert held.problems == []
        assert held.count > 0
        assert source.state.reconnects == 0  # no message broke the downstream stream
