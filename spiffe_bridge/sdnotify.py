"""sd_notify without libsystemd: tell systemd a ``Type=notify`` service is ready or stopping.

One datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract
namespace); without that variable (not started by systemd) nothing happens.
The sidecar says READY=1 once the first complete set of files is on disk, the
relay once its socket is served (``linkerd-env --watch`` is the sidecar).
"""

from __future__ import annotations

import contextlib
import os
import socket


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``READY=1``); True if systemd was told."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(path)
        sock.sendall(message.encode())
        return True
    return False
