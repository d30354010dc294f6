"""Helpers for relay tests: raw downstream streams that tests wait on instead of sleeping."""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from _support.wire import HEADER

from spiffe_bridge._proto import workload_pb2 as pb

if TYPE_CHECKING:
    from spiffe_bridge.relay import Relay

WAIT = 10.0

#: method -> (request, response parser)
STREAMS: dict[str, tuple[Any, Any]] = {
    "FetchX509SVID": (pb.X509SVIDRequest(), pb.X509SVIDResponse.FromString),
    "FetchX509Bundles": (pb.X509BundlesRequest(), pb.X509BundlesResponse.FromString),
    "FetchJWTBundles": (pb.JWTBundlesRequest(), pb.JWTBundlesResponse.FromString),
}


def raw_method(channel: grpc.Channel, method: str, streaming: bool) -> Any:
    """A bytes-in/bytes-out callable for ``/SpiffeWorkloadAPI/<method>`` (no client library)."""
    path = "/SpiffeWorkloadAPI/" + method
    return channel.unary_stream(path) if streaming else channel.unary_unary(path)


class RelayFactory(Protocol):
    """Starts a Relay to ``upstream`` with Relay keyword options; stopped after the test."""

    def __call__(self, upstream: str, **options: Any) -> Relay: ...


class RawStream:
    """One downstream stream read on its own thread; messages and the final status go to a queue."""

    def __init__(self, target: str, method: str = "FetchX509SVID", metadata: Any = HEADER) -> None:
        request, self._parse = STREAMS[method]
        self._channel = grpc.insecure_channel(target)
        call = raw_method(self._channel, method, True)
        self._call = call(request.SerializeToString(), metadata=metadata)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self._call:
                self._queue.put(self._parse(raw))
            self._queue.put(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            self._queue.put(exc.code())

    def next(self, timeout: float = WAIT) -> Any:
        """The next message; fails the test if the stream ended or nothing came in time."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout}s") from None
        assert not isinstance(item, grpc.StatusCode), f"stream ended with {item}"
        return item

    def status(self, timeout: float = WAIT) -> grpc.StatusCode:
        """Wait for the stream to end, skipping messages; return its status code."""
        while True:
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"stream still open after {timeout}s") from None
            if isinstance(item, grpc.StatusCode):
                return item

    @property
    def details(self) -> str:
        """Status details once the stream ended."""
        return str(self._call.details())

    def close(self) -> None:
        """Cancel the stream and close its channel."""
        self._call.cancel()
        self._thread.join(WAIT)
        self._channel.close()


def serials(message: Any) -> list[int]:
    """Leaf serial numbers of an X509SVIDResponse, in order."""
    from cryptography import x509

    from spiffe_bridge._der import split_der

    return [
        x509.load_der_x509_certificate(split_der(s.x509_svid, "chain")[0]).serial_number
        for s in message.svids
    ]


def http_get(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET on a local health endpoint."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
