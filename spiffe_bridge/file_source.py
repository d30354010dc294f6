"""Sources that read a SPIFFE credential folder, and constructors that pick folder or Workload API.

``FileX509Source`` (a background thread) and ``AsyncFileX509Source`` (an asyncio
task) keep the folder's latest good context like the Workload API sources do, and
offer the same reads (``context``, ``svid()``, ``bundle_for()``, ``subscribe()``,
``wait_for()``, ``status``), so the TLS helpers take either. A bad or half-written
folder never replaces the last good context; it is counted as a rejected update.
``x509_source()`` / ``async_x509_source()`` follow the draft's §3.1: the Workload
API when ``$SPIFFE_ENDPOINT_SOCKET`` (or ``address``) says where it is, else the
credential folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from spiffe_bridge import credential_folder
from spiffe_bridge.address import ENV_VAR as ENDPOINT_ENV_VAR
from spiffe_bridge.client.streams import X509_CONTEXTS, StreamSpec
from spiffe_bridge.credential_folder import CredentialFolderError
from spiffe_bridge.sources import AsyncX509Source, X509Source
from spiffe_bridge.sources.reads import X509Reads
from spiffe_bridge.sources.state import SourceState, SourceStatus
from spiffe_bridge.x509context import X509Context


def _folder_or_fail(folder: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Path:
    found = credential_folder.locate(folder, env)
    if found is None:
        defaults = ", ".join(str(p) for p in credential_folder.DEFAULT_FOLDERS)
        raise CredentialFolderError(
            f"no SPIFFE credentials: ${ENDPOINT_ENV_VAR} and ${credential_folder.ENV_VAR} are unset "
            f"and none of {defaults} holds a {credential_folder.CREDENTIAL_BUNDLE}"
        )
    return found


class FileX509Source(X509Reads):
    """The credential folder's current X.509 context, reloaded on change by a background thread."""

    def __init__(
        self,
        folder: str | os.PathLike[str] | None = None,
        *,
        timeout: float | None = 30.0,
        poll_interval: float = 5.0,
    ) -> None:
        self.folder = _folder_or_fail(folder)
        self._poll_interval = poll_interval
        self._state: SourceState[X509Context] = SourceState(f"file-x509-source ({self.folder})")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spiffe-bridge-file-source", daemon=True)
        self._thread.start()
        if timeout is None or timeout > 0:
            try:
                self._state.wait(None, timeout)
            except BaseException:
                self.close()
                raise

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self._started.set()
            watch = credential_folder.watch(self.folder, self._state.on_error, self._poll_interval)
            async for ctx in watch:
                self._state.offer(ctx)

        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(main())
        self._started.set()

    @property
    def last_error(self) -> Exception | None:
        """The most recent rejected read (bad bytes, missing file, failed validation)."""
        return self._state.last_error

    @property
    def state(self) -> SourceState[X509Context]:
        """Counters and status for health checks and metrics."""
        return self._state

    def subscribe(self, callback: Callable[[X509Context], Any]) -> Callable[[], None]:
        """Call ``callback(ctx)`` for each changed context (on a thread of its own)."""
        return self._state.subscribe(callback)

    def wait_for(
        self, predicate: Callable[[X509Context], bool] | None = None, timeout: float | None = 30.0
    ) -> X509Context:
        """Block until the held context satisfies ``predicate`` (NotReadyError on timeout)."""
        return self._state.wait(predicate, timeout)

    def close(self) -> None:
        """Stop watching the folder and the subscriber threads."""
        self._started.wait(5)
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(task.cancel)
        if threading.current_thread() is not self._thread:
            self._thread.join(5)
        self._state.fail(None, SourceStatus.CLOSED)

    def __enter__(self) -> FileX509Source:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _FolderStream:
    """The part of a client an AsyncX509Source streams from (``sources.aio.StreamClient``): the folder."""

    def __init__(self, folder: Path, poll_interval: float) -> None:
        self.folder = folder
        self.endpoint = f"file://{folder}"
        self._poll_interval = poll_interval

    def watch(
        self, spec: StreamSpec[Any], on_error: Callable[[Exception], None] | None = None
    ) -> AsyncIterator[X509Context]:
        """The folder's contexts: the one stream an X.509 source asks for (``X509_CONTEXTS``)."""
        if spec is not X509_CONTEXTS:
            raise NotImplementedError(f"a credential folder serves X.509 contexts, not {spec.what}")
        return credential_folder.watch(self.folder, on_error or (lambda exc: None), self._poll_interval)

    async def fetch_jwt_svid(self, audience: str, *extra: str, **kwargs: Any) -> Any:
        raise NotImplementedError("a credential folder holds no JWT-SVIDs")

    async def close(self) -> None:
        """Nothing to release: the watch ends with its task."""


class AsyncFileX509Source(AsyncX509Source):
    """``async with AsyncFileX509Source() as source:``; the folder's context as an asyncio task."""

    def __init__(
        self,
        folder: str | os.PathLike[str] | None = None,
        *,
        timeout: float | None = 30.0,
        poll_interval: float = 5.0,
    ) -> None:
        stream = _FolderStream(_folder_or_fail(folder), poll_interval)
        self.folder = stream.folder
        super().__init__(client=cast(Any, stream), timeout=timeout)

    @property
    def last_error(self) -> Exception | None:
        """The most recent rejected read."""
        return self._state.last_error


def _workload_api(address: str | None, env: Mapping[str, str] | None) -> str | None:
    """The Workload API address to use (explicit, else from the environment), or None."""
    return address or (os.environ if env is None else env).get(ENDPOINT_ENV_VAR) or None


def x509_source(
    folder: str | os.PathLike[str] | None = None,
    *,
    address: str | None = None,
    timeout: float | None = 30.0,
    env: Mapping[str, str] | None = None,
) -> X509Source | FileX509Source:
    """The Workload API source when an endpoint is known (§3.1 step 1), else the credential folder."""
    endpoint = _workload_api(address, env)
    if endpoint is not None:
        return X509Source(endpoint, timeout=timeout)
    return FileX509Source(_folder_or_fail(folder, env), timeout=timeout)


async def async_x509_source(
    folder: str | os.PathLike[str] | None = None,
    *,
    address: str | None = None,
    timeout: float | None = 30.0,
    env: Mapping[str, str] | None = None,
) -> AsyncX509Source:
    """The started async twin of :func:`x509_source` (close it with ``await source.close()``)."""
    endpoint = _workload_api(address, env)
    if endpoint is not None:
        return await AsyncX509Source(endpoint, timeout=timeout).start()
    return await AsyncFileX509Source(_folder_or_fail(folder, env), timeout=timeout).start()
