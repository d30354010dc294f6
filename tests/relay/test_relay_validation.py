"""Invalid upstream updates: never shown by default, taken back at once with forward_before_verify."""

from __future__ import annotations

from typing import Any

import grpc
from _support.pki import key_der
from _support.wire import HEADER
from relay_helpers import RawStream, RelayFactory, raw_method

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge.client.sync import WorkloadClient
from spiffe_bridge.devagent.ca import generate_private_key
from spiffe_bridge.devagent.server import DevAgent
from spiffe_bridge.relay import Relay
from spiffe_bridge.retry import Backoff


def _wrong_key(dev_agent: DevAgent) -> pb.X509SVIDResponse:
    """The agent's current response with the SVID's key swapped for another: fails validation."""
    response = dev_agent.x509_svid_response()
    other = generate_private_key()
    response.svids[0].x509_svid_key = key_der(other)
    return response


def _stream(relay: Relay, streams: list[RawStream]) -> RawStream:
    stream = RawStream("unix:" + relay.socket_path)
    streams.append(stream)
    return stream


def _wire(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def test_bytes_are_the_agents(dev_agent: DevAgent, relay: Relay) -> None:
    """No re-encoding: the relay serves the agent's bytes, even a field this library does not know."""
    unknown_field = b"\x98\x06\x01"  # field 99, varint 1: kept only if the bytes pass through
    sent = _wire(dev_agent.x509_svid_response()) + unknown_field
    with grpc.insecure_channel("unix:" + relay.socket_path) as channel:
        call = raw_method(channel, "FetchX509SVID", True)(b"", metadata=HEADER, timeout=10)
        next(call)
        assert dev_agent.push_raw("FetchX509SVID", sent) == 1
        assert next(call) == sent
        call.cancel()


def test_forward_before_verify_takes_an_invalid_update_back(
    dev_agent: DevAgent, relay_factory: RelayFactory, streams: list[RawStream]
) -> None:
    relay = relay_factory(dev_agent.address, forward_before_verify=True)
    relay.wait_serving()
    stream = _stream(relay, streams)
    good = stream.next()
    bad = _wrong_key(dev_agent)

    assert dev_agent.push_raw("FetchX509SVID", bad) == 1
    assert stream.next() == bad  # handed on before validation finished ...
    assert stream.next() == good  # ... and taken back right after: the last valid state again
    with WorkloadClient(relay.address) as client:  # new clients get the valid state
        assert client.fetch_x509_context().svids[0].key_der == good.svids[0].x509_svid_key

    assert dev_agent.push_raw("FetchX509SVID", bad) == 1  # the same bad bytes are not forwarded twice:
    dev_agent.rotate()
    assert stream.next() == dev_agent.x509_svid_response()  # the next message is the rotation


def test_an_invalid_update_never_reaches_a_client_by_default(
    dev_agent: DevAgent, relay: Relay, streams: list[RawStream]
) -> None:
    """The attack run's six invalid updates: none may reach a client (the relay is a trust boundary)."""
    stream = _stream(relay, streams)
    stream.next()
    for _ in range(6):
        assert dev_agent.push_raw("FetchX509SVID", _wrong_key(dev_agent)) == 1
        dev_agent.rotate()  # on the same upstream stream, so the relay handles it after the bad one
        assert stream.next() == dev_agent.x509_svid_response()  # the bad update never came through
    assert relay.stats().feeds["FetchX509SVID"].invalid_updates == 6


def test_invalid_first_update_is_not_served(
    dev_agent: DevAgent, relay_factory: RelayFactory, streams: list[RawStream]
) -> None:
    """Nothing valid to fall back to: streams end Unavailable (clients retry), nothing is held."""
    dev_agent.respond_next_with("FetchX509SVID", _wrong_key(dev_agent))
    dev_agent.close_after_each_message("FetchX509SVID")  # the agent then goes away for a while
    slow = Backoff(initial=60.0, maximum=60.0)
    relay = relay_factory(dev_agent.address, hold=30.0, startup_wait=10.0, backoff=slow)
    stream = _stream(relay, streams)  # may get the bad update first; must then end Unavailable
    assert stream.status() is grpc.StatusCode.UNAVAILABLE  # not held for 30 s: it was never valid
    snapshot = relay.snapshot()
    assert not snapshot.serving and snapshot.code is grpc.StatusCode.UNAVAILABLE
