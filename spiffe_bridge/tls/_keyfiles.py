"""A private directory for handing key material to OpenSSL through files.

The stdlib ``ssl`` module can load a certificate and its private key only from
files (``SSLContext.load_cert_chain``). This module keeps that exposure as
small as possible: one directory per TLS context, mode 0700, created in a
memory-backed location when there is one; each file is created exclusively
with mode 0600, loaded, and deleted again straight away, so key material sits
on the file system only for the duration of one ``load_cert_chain`` call. The
directory is removed on ``close()``, at garbage collection or at interpreter
exit, whichever comes first.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import ssl
import tempfile
import threading
import weakref

_PREFIX = "spiffe-bridge-tls-"
_FILE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)


def default_parent() -> str:
    """Where key directories go: ``$XDG_RUNTIME_DIR``, else ``/dev/shm``, else the temp dir.

    The first two are memory-backed on Linux, so key bytes never reach a disk.
    """
    for candidate in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm"):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return tempfile.gettempdir()


class PrivateKeyDir:
    """A 0700 directory in which 0600 key files live only while OpenSSL reads them."""

    def __init__(self, parent: str | None = None) -> None:
        self._path = tempfile.mkdtemp(prefix=_PREFIX, dir=parent or default_parent())
        os.chmod(self._path, 0o700)  # mkdtemp already does; be explicit about the contract
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._path, ignore_errors=True)

    @property
    def path(self) -> str:
        """The directory's path (it is removed by ``close``)."""
        return self._path

    @property
    def closed(self) -> bool:
        """True once the directory has been removed."""
        return not self._finalizer.alive

    def load_cert_chain(self, context: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
        """Load a PEM chain and key into ``context`` via two short-lived 0600 files."""
        if self.closed:
            raise ValueError("the key directory is closed")
        with self._lock:
            serial = next(self._counter)
        cert_path = self._write(f"chain-{serial}.pem", chain_pem)
        try:
            key_path = self._write(f"key-{serial}.pem", key_pem)
            try:
                context.load_cert_chain(cert_path, key_path)
            finally:
                _unlink(key_path)
        finally:
            _unlink(cert_path)

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self._path, name)
        fd = os.open(path, _FILE_FLAGS, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        os.close(fd)
        return path

    def close(self) -> None:
        """Remove the directory and anything left in it; idempotent."""
        self._finalizer()


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
