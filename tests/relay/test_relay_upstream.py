"""What downstream clients see when the upstream agent restarts, denies, or is not there."""

from __future__ import annotations

import os

import grpc
import pytest
from _support.wire import HEADER
from relay_helpers import STREAMS, RawStream, RelayFactory, raw_method, serials

from spiffe_bridge.client.sync import WorkloadClient
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.relay import Kind, Relay


def _target(relay: Relay) -> str:
    return "unix:" + relay.socket_path


def _status(relay: Relay, method: str) -> tuple[grpc.StatusCode, str]:
    """Open one stream without waiting for readiness; return how it ended (OK if a message came)."""
    request, _ = STREAMS[method]
    with grpc.insecure_channel(_target(relay)) as channel:
        call = raw_method(channel, method, True)(request.SerializeToString(), metadata=HEADER, timeout=10)
        try:
            next(call)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
        call.cancel()
        return grpc.StatusCode.OK, ""


def test_restart_is_survived_by_open_streams(
    dev_agent: DevAgent, relay: Relay, streams: list[RawStream]
) -> None:
    stream = RawStream(_target(relay))
    streams.append(stream)
    assert serials(stream.next()) == [dev_agent.svids[0].serial_number]

    dev_agent.restart()
    dev_agent.wait_for_streams_opened("FetchX509SVID", 2)  # the relay reconnected upstream
    (rotated,) = dev_agent.rotate()
    assert serials(stream.next()) == [rotated.serial_number]  # same downstream stream, post-restart state
    with WorkloadClient(relay.address) as client:  # and new clients get it too
        assert client.fetch_x509_context().svids[0].leaf.serial_number == rotated.serial_number
    assert relay.stats().feeds[Kind.X509_SVID].messages_sent >= 3  # 2 on the surviving stream


def test_permission_denied_is_passed_on(dev_agent: DevAgent, relay: Relay, streams: list[RawStream]) -> None:
    open_streams = [RawStream(_target(relay), method) for method in STREAMS]
    streams.extend(open_streams)
    for stream in open_streams:
        stream.next()

    dev_agent.deny()
    for stream in open_streams:
        assert stream.status() is grpc.StatusCode.PERMISSION_DENIED
    for method in STREAMS:
        assert _status(relay, method)[0] is grpc.StatusCode.PERMISSION_DENIED

    dev_agent.allow()
    for kind in Kind:
        relay.wait_serving(kind, timeout=15)  # the relay's backoff is capped at 5 s
    with WorkloadClient(relay.address) as client:
        assert client.fetch_x509_context().svids[0].leaf.serial_number == dev_agent.svids[0].serial_number


def _missing_socket(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"/tmp/sbr-up-{os.getpid()}-{tmp_path_factory.mktemp('up').name}.sock"


def test_upstream_down_at_start_is_unavailable(
    relay_factory: RelayFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    socket_path = _missing_socket(tmp_path_factory)
    relay = relay_factory("unix://" + socket_path, startup_wait=0)
    for method in STREAMS:
        code, details = _status(relay, method)
        assert code is grpc.StatusCode.UNAVAILABLE, (method, code)  # never InvalidArgument
        assert "no state" in details
    with grpc.insecure_channel(_target(relay)) as channel:  # unary calls too, with the upstream's code
        with pytest.raises(grpc.RpcError) as err:
            raw_method(channel, "FetchJWTSVID", False)(b"\n\x03aud", metadata=HEADER, timeout=10)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE

    agent = DevAgent(socket_path).start()  # the agent appears: the relay picks it up by itself
    try:
        relay.wait_serving()
        assert _status(relay, "FetchX509SVID")[0] is grpc.StatusCode.OK
    finally:
        agent.stop()


def test_stream_opened_before_first_answer_waits_for_it(
    relay_factory: RelayFactory, tmp_path_factory: pytest.TempPathFactory, streams: list[RawStream]
) -> None:
    socket_path = _missing_socket(tmp_path_factory)
    relay = relay_factory("unix://" + socket_path, startup_wait=30)
    stream = RawStream(_target(relay))
    streams.append(stream)
    agent = DevAgent(socket_path).start()
    try:
        assert serials(stream.next()) == [agent.svids[0].serial_number]
    finally:
        agent.stop()


def test_lost_upstream_is_unavailable_after_hold(
    dev_agent: DevAgent, relay_factory: RelayFactory, streams: list[RawStream]
) -> None:
    relay = relay_factory(dev_agent.address, hold=0)
    relay.wait_serving()
    stream = RawStream(_target(relay))
    streams.append(stream)
    stream.next()
    dev_agent.stop()
    assert stream.status() is grpc.StatusCode.UNAVAILABLE  # never InvalidArgument
    code, details = _status(relay, "FetchX509SVID")
    assert code is grpc.StatusCode.UNAVAILABLE and "unreachable" in details
    dev_agent.start()
    relay.wait_serving()
    assert _status(relay, "FetchX509SVID")[0] is grpc.StatusCode.OK


def test_last_state_is_served_during_hold(dev_agent: DevAgent, relay_factory: RelayFactory) -> None:
    relay = relay_factory(dev_agent.address, hold=60)
    relay.wait_serving()
    version = relay.snapshot().version
    dev_agent.stop()
    relay.wait_until(lambda s: s.upstream_lost)
    assert relay.stats().feeds[Kind.X509_SVID].status == "holding"
    with WorkloadClient(relay.address) as client:  # the agent is gone; the relay still answers
        assert client.fetch_x509_context().svids[0].leaf.serial_number == dev_agent.svids[0].serial_number
    assert relay.snapshot().version == version and relay.snapshot().serving
    dev_agent.start()
    assert not relay.wait_until(lambda s: not s.upstream_lost).upstream_lost  # back: no longer holding
