"""The servicer's interface to the agent (``calls.AgentCalls``), exercised without gRPC."""

from __future__ import annotations

import grpc
import pytest

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.devagent import Rpc
from spiffe_bridge.devagent.calls import AgentCalls, CallHandle, Outgoing, Signal
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.devagent.state import AgentState

X509 = Rpc.FETCH_X509_SVID


@pytest.fixture
def agent() -> AgentState:
    return AgentState("example.org")


def open_stream(desk: AgentCalls, rpc: Rpc = X509) -> CallHandle:
    handle = desk.open_call(rpc, desk.generation)
    assert handle is not None
    return handle


def payload(desk: AgentCalls, handle: CallHandle) -> object:
    item = desk.next_outgoing(handle)
    assert isinstance(item, Outgoing)
    return item.payload


def test_a_stream_sends_the_scripted_answer_then_the_full_state(agent: AgentState) -> None:
    desk = agent.call_desk
    agent.respond_next_with(X509, b"\xff junk")
    handle = open_stream(desk)
    assert agent.open_streams(X509) == 1 and agent.streams_opened(X509) == 1
    assert payload(desk, handle) == b"\xff junk"
    state = payload(desk, handle)
    assert isinstance(state, pb.X509SVIDResponse)
    assert [s.spiffe_id for s in state.svids] == ["spiffe://example.org/workload"]
    desk.close_call(handle)
    assert agent.open_streams() == 0
    assert desk.next_outgoing(handle) is Signal.END


def test_changes_between_two_sends_make_one_full_state_push(agent: AgentState) -> None:
    desk = agent.call_desk
    handle = open_stream(desk)
    payload(desk, handle)  # the initial state
    agent.rotate()
    agent.rotate()
    assert agent.push_raw(X509, b"marker") == 1
    latest = payload(desk, handle)
    assert isinstance(latest, pb.X509SVIDResponse)
    assert latest.svids[0].x509_svid == agent.svids[0].chain_der()
    assert payload(desk, handle) == b"marker"


def test_a_denial_window_turns_the_next_send_into_a_deny(agent: AgentState) -> None:
    desk = agent.call_desk
    handle = open_stream(desk)
    agent.deny()
    assert desk.denied
    assert desk.next_outgoing(handle) is Signal.DENY
    agent.allow()
    assert isinstance(payload(desk, handle), pb.X509SVIDResponse)


def test_scripted_errors_are_taken_one_per_call_in_order(agent: AgentState) -> None:
    desk = agent.call_desk
    agent.inject_errors(X509, [(grpc.StatusCode.UNAVAILABLE, "one"), (grpc.StatusCode.INTERNAL, "two")])
    for _ in range(3):
        desk.count_call(X509)
    taken = [desk.take_error(X509) for _ in range(3)]
    assert [(e.code, e.message) if e else None for e in taken] == [
        (grpc.StatusCode.UNAVAILABLE, "one"),
        (grpc.StatusCode.INTERNAL, "two"),
        None,
    ]
    assert agent.calls(X509) == 3


def test_a_unary_call_is_not_a_stream_and_its_cancel_ends_a_hang(agent: AgentState) -> None:
    desk = agent.call_desk
    rpc = Rpc.FETCH_JWT_SVID
    agent.hang(rpc)
    handle = open_stream(desk, rpc)
    assert agent.open_streams() == 0 and agent.streams_opened(rpc) == 0
    desk.close_call(handle)
    assert desk.await_first(handle) is False
    agent.hang(rpc, enabled=False)
    assert desk.await_first(open_stream(desk, rpc)) is True


def test_sent_answers_are_counted_and_close_after_message_is_per_rpc(agent: AgentState) -> None:
    desk = agent.call_desk
    desk.record_sent(Rpc.VALIDATE_JWT_SVID, "validation result")
    assert agent.messages_sent(Rpc.VALIDATE_JWT_SVID) == 1
    agent.close_after_each_message(X509)
    assert desk.closes_after_message(X509) and not desk.closes_after_message(Rpc.FETCH_JWT_BUNDLES)


def test_the_answers_come_from_the_agents_identities(agent: AgentState) -> None:
    desk = agent.call_desk
    response = desk.jwt_svid_response(["aud"], "")
    assert [s.spiffe_id for s in response.svids] == ["spiffe://example.org/workload"]
    assert desk.validate_jwt_svid(response.svids[0].svid, "aud")[0] == "spiffe://example.org/workload"
    with pytest.raises(LookupError):
        desk.jwt_svid_response(["aud"], "spiffe://example.org/other")


def test_calls_of_a_stopped_servers_generation_are_refused(dev_agent: DevAgent) -> None:
    desk = dev_agent.call_desk
    before = desk.generation
    handle = open_stream(desk)
    dev_agent.restart()
    assert desk.generation != before
    assert desk.next_outgoing(handle) is Signal.END
    assert desk.open_call(X509, before) is None
    assert desk.open_call(Rpc.FETCH_JWT_SVID, before) is None
    assert desk.open_call(X509, desk.generation) is not None
