"""Fault injection: every scripted misbehaviour shows up on the wire as promised."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest
from _support.wire import HEADER
from devagent_helpers import CALL_TIMEOUT, Collector

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge._proto import workload_pb2_grpc
from spiffe_bridge.devagent import Rpc
from spiffe_bridge.devagent.server import DevAgent

Stub = workload_pb2_grpc.SpiffeWorkloadAPIStub


def open_x509(stub: Stub) -> Any:
    return stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER, timeout=CALL_TIMEOUT)


def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    code: grpc.StatusCode = info.value.code()
    return code


def test_error_sequence_then_normal(dev_agent: DevAgent, stub: Stub) -> None:
    dev_agent.inject_errors(
        Rpc.FETCH_X509_SVID,
        [(grpc.StatusCode.UNAVAILABLE, "agent starting"), (grpc.StatusCode.INTERNAL, "boom")],
    )
    with pytest.raises(grpc.RpcError) as info:
        next(open_x509(stub))
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.UNAVAILABLE, "agent starting")
    assert code_of(lambda: next(open_x509(stub))) == grpc.StatusCode.INTERNAL
    assert next(open_x509(stub)).svids
    assert dev_agent.calls(Rpc.FETCH_X509_SVID) == 3


def test_fail_next_on_unary_rpcs(dev_agent: DevAgent, stub: Stub) -> None:
    dev_agent.fail_next("FetchJWTSVID", grpc.StatusCode.UNAVAILABLE, times=2)
    dev_agent.fail_next("ValidateJWTSVID", grpc.StatusCode.UNIMPLEMENTED)

    def fetch() -> pb.JWTSVIDResponse:
        request = pb.JWTSVIDRequest(audience=["a"])
        result: pb.JWTSVIDResponse = stub.FetchJWTSVID(request, metadata=HEADER, timeout=CALL_TIMEOUT)
        return result

    assert code_of(fetch) == code_of(fetch) == grpc.StatusCode.UNAVAILABLE
    token = fetch().svids[0].svid
    request = pb.ValidateJWTSVIDRequest(audience="a", svid=token)

    def validate() -> pb.ValidateJWTSVIDResponse:
        result: pb.ValidateJWTSVIDResponse = stub.ValidateJWTSVID(
            request, metadata=HEADER, timeout=CALL_TIMEOUT
        )
        return result

    assert code_of(validate) == grpc.StatusCode.UNIMPLEMENTED
    assert validate().spiffe_id == "spiffe://example.org/workload"


def test_close_after_each_message(dev_agent: DevAgent, stub: Stub) -> None:
    dev_agent.close_after_each_message("FetchX509SVID")
    messages = list(open_x509(stub))  # ends with status OK after one message
    assert len(messages) == 1 and messages[0].svids
    assert len(list(open_x509(stub))) == 1
    dev_agent.close_after_each_message("FetchX509SVID", enabled=False)
    stream = open_x509(stub)
    next(stream)
    dev_agent.rotate()
    assert next(stream).svids  # stays open again
    stream.cancel()


def test_hang_until_released(dev_agent: DevAgent, stub: Stub) -> None:
    dev_agent.hang("FetchX509SVID")
    stream = open_x509(stub)
    received: Collector[pb.X509SVIDResponse] = Collector()
    reader = threading.Thread(target=lambda: received.add(next(stream)))
    reader.start()
    dev_agent.wait_for_streams(1, rpc="FetchX509SVID")
    assert dev_agent.messages_sent("FetchX509SVID") == 0 and received.items == []
    dev_agent.hang("FetchX509SVID", enabled=False)
    assert received.wait_count(1)[0].svids
    reader.join()
    stream.cancel()


def test_hang_until_stopped(dev_agent: DevAgent, stub: Stub) -> None:
    dev_agent.hang(Rpc.FETCH_JWT_BUNDLES)
    stream = stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=HEADER, timeout=CALL_TIMEOUT)
    errors: Collector[grpc.StatusCode] = Collector()

    def read() -> None:
        try:
            next(stream)
        except grpc.RpcError as err:
            errors.add(err.code())

    reader = threading.Thread(target=read)
    reader.start()
    dev_agent.wait_for_streams(1, rpc=Rpc.FETCH_JWT_BUNDLES)
    dev_agent.stop()
    assert errors.wait_count(1) == [grpc.StatusCode.UNAVAILABLE]
    reader.join()
    assert dev_agent.messages_sent(Rpc.FETCH_JWT_BUNDLES) == 0


def test_malformed_push_then_good_one(dev_agent: DevAgent, stub: Stub) -> None:
    stream = open_x509(stub)
    good = next(stream)
    garbage = pb.X509SVIDResponse(
        svids=[pb.X509SVID(spiffe_id="spiffe://example.org/workload", x509_svid=b"\x30\x03bad", bundle=b"")]
    )
    assert dev_agent.push_raw("FetchX509SVID", garbage) == 1
    dev_agent.rotate()
    assert next(stream) == garbage
    after = next(stream)
    assert after.svids[0].x509_svid != good.svids[0].x509_svid
    assert after.svids[0].x509_svid == dev_agent.svids[0].chain_der()
    stream.cancel()


def test_push_raw_reaches_every_open_stream_of_that_rpc(dev_agent: DevAgent, stub: Stub) -> None:
    streams = [
        stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=HEADER, timeout=CALL_TIMEOUT) for _ in range(2)
    ]
    for s in streams:
        next(s)
    x509 = open_x509(stub)
    next(x509)
    bad = pb.JWTBundlesResponse(bundles={"spiffe://example.org": b"{not json"})
    assert dev_agent.push_raw(Rpc.FETCH_JWT_BUNDLES, bad) == 2
    assert [next(s) for s in streams] == [bad, bad]
    for s in (*streams, x509):
        s.cancel()
    with pytest.raises(ValueError, match="not a streaming RPC"):
        dev_agent.push_raw(Rpc.FETCH_JWT_SVID, pb.JWTSVIDResponse())


def test_undecodable_bytes_break_the_clients_decoding(dev_agent: DevAgent, stub: Stub) -> None:
    stream = open_x509(stub)
    next(stream)
    dev_agent.push_raw("FetchX509SVID", b"\xff\xff\xff\xff not protobuf")
    with pytest.raises(grpc.RpcError) as info:
        next(stream)
    assert info.value.code() == grpc.StatusCode.INTERNAL  # client-side deserialisation failure


def test_respond_next_with_raw_first_message(dev_agent: DevAgent, stub: Stub) -> None:
    empty = pb.X509SVIDResponse()
    dev_agent.respond_next_with("FetchX509SVID", empty)
    stream = open_x509(stub)
    assert next(stream) == empty
    assert next(stream).svids  # followed by the real state
    stream.cancel()
    assert next(open_x509(stub)).svids  # only the next call was affected


def test_delay_before_first_message(dev_agent: DevAgent, stub: Stub) -> None:
    dev_agent.delay_first_message("FetchX509SVID", 0.3)
    started = time.monotonic()
    assert next(open_x509(stub)).svids
    assert time.monotonic() - started >= 0.3


def test_clear_faults(dev_agent: DevAgent, stub: Stub) -> None:
    dev_agent.fail_next("FetchX509SVID", grpc.StatusCode.UNAVAILABLE)
    dev_agent.hang("FetchX509SVID")
    dev_agent.close_after_each_message("FetchX509Bundles")
    dev_agent.clear_faults()
    stream = open_x509(stub)
    assert next(stream).svids
    stream.cancel()


def test_unary_hang_until_released_or_deadline(dev_agent: DevAgent, stub: Stub) -> None:
    dev_agent.hang("FetchJWTSVID")
    request = pb.JWTSVIDRequest(audience=["a"])
    with pytest.raises(grpc.RpcError) as info:
        stub.FetchJWTSVID(request, metadata=HEADER, timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    answers: Collector[pb.JWTSVIDResponse] = Collector()
    caller = threading.Thread(
        target=lambda: answers.add(stub.FetchJWTSVID(request, metadata=HEADER, timeout=CALL_TIMEOUT))
    )
    caller.start()
    dev_agent.wait_for_calls("FetchJWTSVID", 2)
    assert dev_agent.messages_sent("FetchJWTSVID") == 0
    dev_agent.hang("FetchJWTSVID", enabled=False)
    assert answers.wait_count(1)[0].svids
    caller.join()
