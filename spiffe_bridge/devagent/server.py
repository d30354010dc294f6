"""DevAgent: the embedded Workload API server and its controller.

A ``DevAgent`` is an ``AgentState`` (identities, bundles, faults, counters)
plus a gRPC server on a Unix socket and an optional rotation timer. It can be
stopped and started again on the same socket to simulate an agent restart.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import grpc

from spiffe_bridge import socketfile

from .ca import KeyType
from .identity import Identity
from .servicer import WorkloadAPIServicer
from .state import AgentState

_log = logging.getLogger("spiffe_bridge.devagent")
MAX_SOCKET_PATH = socketfile.MAX_SOCKET_PATH
#: It hands out private keys: only its owner may connect unless ``socket_mode`` says otherwise.
DEFAULT_SOCKET_MODE = 0o600


def socket_path_from_address(value: str | os.PathLike[str]) -> str:
    """Absolute socket path from ``/p``, ``unix:/p``, ``unix:///p`` or a relative path."""
    text = os.fspath(value)
    if text.startswith("unix://"):
        text = text[len("unix://") :]
    elif text.startswith("unix:"):
        text = text[len("unix:") :]
    return os.path.abspath(text)


class DevAgent(AgentState):
    """Embedded SPIFFE Workload API server for demos and tests.

    Use as a context manager, or call ``start()``/``stop()``. All controller
    methods (``rotate``, ``deny``, ``fail_next``, ``wait_for_streams``, ...)
    are inherited from ``AgentState`` and are thread-safe.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        trust_domain: str = "example.org",
        identities: Iterable[Identity | str] | None = None,
        ttl: float = 3600.0,
        jwt_ttl: float = 300.0,
        rotate_every: float | None = None,
        intermediate: bool = False,
        key_type: KeyType = "ec-p256",
        federate_with: Iterable[str] = (),
        socket_mode: int = DEFAULT_SOCKET_MODE,
        max_workers: int = 64,
    ) -> None:
        super().__init__(
            trust_domain,
            identities,
            ttl=ttl,
            jwt_ttl=jwt_ttl,
            intermediate=intermediate,
            key_type=key_type,
            federate_with=federate_with,
        )
        path = socket_path_from_address(socket_path)
        if len(path.encode()) > MAX_SOCKET_PATH:
            raise ValueError(f"socket path is longer than {MAX_SOCKET_PATH} bytes: {path}")
        self._socket_path = path
        self._socket_mode = socket_mode
        self._max_workers = max_workers
        self._rotate_every = rotate_every
        self._lifecycle = threading.Lock()
        self._server: grpc.Server | None = None
        self._servicer: WorkloadAPIServicer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._timer_stop: threading.Event | None = None
        self._inode = 0

    # ----- addresses -----
    @property
    def socket_path(self) -> str:
        """Absolute filesystem path of the Unix socket."""
        return self._socket_path

    @property
    def address(self) -> str:
        """``unix:///path`` form, as SPIFFE_ENDPOINT_SOCKET expects."""
        return f"unix://{self._socket_path}"

    @property
    def grpc_target(self) -> str:
        """Target string for ``grpc.insecure_channel``."""
        return f"unix:{self._socket_path}"

    def env(self) -> dict[str, str]:
        """Environment a workload needs to find this agent."""
        return {"SPIFFE_ENDPOINT_SOCKET": self.address}

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._server is not None

    # ----- lifecycle -----
    def start(self) -> DevAgent:
        """Bind the socket and serve; returns self.

        A stale socket file is replaced; one a live server serves is not (FileExistsError), so
        pointed at a real agent's socket the dev agent fails instead of cutting the agent off.
        """
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("dev agent is already running")
            socketfile.make_parents(self._socket_path)
            socketfile.clear_stale(self._socket_path, "Workload API server")
            staged = socketfile.Staged(self._socket_path)  # first: it may fail (EACCES)
            servicer = WorkloadAPIServicer(self.call_desk)
            executor = ThreadPoolExecutor(self._max_workers, thread_name_prefix="devagent")
            server = grpc.server(executor, handlers=[servicer.generic_handler()])
            try:
                with staged.tight_umask():
                    server.add_insecure_port("unix:" + staged.bind_path)
                self._inode = staged.publish(self._socket_mode)
                server.start()
            except BaseException:
                server.stop(None)
                executor.shutdown(wait=False)
                staged.discard()
                self._remove_socket()
                raise
            self._server, self._servicer, self._executor = server, servicer, executor
            self._start_timer()
        _log.info("dev agent serving %s for trust domain %s", self.address, self.trust_domain)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: cancel every RPC (clients see the connection drop), remove the socket."""
        with self._lifecycle:
            server, servicer, executor = self._server, self._servicer, self._executor
            if server is None or servicer is None or executor is None:
                return
            self._server = self._servicer = self._executor = None
            self._stop_timer()
            stopped = server.stop(grace=None)
            self._end_all_streams()
            stopped.wait(timeout)
            if not servicer.wait_idle(timeout):
                _log.warning("dev agent: handlers still running %.1fs after stop", timeout)
            executor.shutdown(wait=False, cancel_futures=True)
            self._remove_socket()
        _log.info("dev agent on %s stopped", self.address)

    def restart(self) -> None:
        """Simulate an agent restart: stop (dropping streams), remove the socket, start."""
        self.stop()
        self.start()

    def __enter__(self) -> DevAgent:
        return self if self.running else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----- automatic rotation -----
    @property
    def rotate_every(self) -> float | None:
        """Automatic rotation interval in seconds, or None."""
        return self._rotate_every

    def set_rotation_interval(self, seconds: float | None) -> None:
        """Rotate all SVIDs every ``seconds`` (None disables); restarts the timer."""
        with self._lifecycle:
            self._rotate_every = seconds
            if self._server is not None:
                self._stop_timer()
                self._start_timer()

    def _start_timer(self) -> None:
        interval = self._rotate_every
        if not interval:
            return
        stop = threading.Event()
        self._timer_stop = stop

        def loop() -> None:
            while not stop.wait(interval):
                try:
                    self.rotate()
                except Exception:
                    _log.exception("dev agent: scheduled rotation failed")

        threading.Thread(target=loop, name="devagent-rotation", daemon=True).start()

    def _stop_timer(self) -> None:
        if self._timer_stop is not None:
            self._timer_stop.set()
            self._timer_stop = None

    def _remove_socket(self) -> None:
        if self._inode:
            socketfile.remove(self._socket_path, self._inode)
            self._inode = 0
