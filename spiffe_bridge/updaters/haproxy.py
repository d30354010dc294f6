"""HAProxy's runtime API: replace a certificate (and CA file) in a running HAProxy, no reload.

``set ssl cert <crt> <<`` opens a transaction with the new PEM (chain and key, the
combined file's content) and ``commit ssl cert <crt>`` swaps it in: new handshakes
use it, the PID and every established connection stay. ``<crt>`` is the path as
HAProxy's own configuration names it. A CA file (``ca-file`` on a bind line) is
updated the same way with ``set/commit ssl ca-file`` on HAProxy 2.5 and newer.
Addresses are ``unix:///path/admin.sock`` or ``tcp://IP:port``; the socket needs
``level admin``. Every command is one connection, bounded by the policy's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from spiffe_bridge.updaters.policy import UpdateError, UpdatePolicy, with_retries

ACTION = "reload_haproxy"
#: The first release whose runtime API updates CA files.
CA_FILE_VERSION = (2, 5)
_MAX_ANSWER = 1 << 20
_ABORT_TIMEOUT = 2.0


@dataclass(frozen=True)
class Address:
    """Where the runtime API listens: a unix socket path, or host and port."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Address:
        """``unix:///run/haproxy/admin.sock`` or ``tcp://127.0.0.1:9999`` (ValueError otherwise)."""
        parts = urlsplit(text)
        if parts.scheme == "unix" and parts.path and not parts.netloc:
            return cls(path=parts.path)
        if parts.scheme == "tcp" and parts.hostname and parts.port and parts.path in ("", "/"):
            return cls(host=parts.hostname, port=parts.port)
        raise ValueError(f"not a HAProxy runtime API address: {text!r} (unix:///path or tcp://IP:port)")

    def __str__(self) -> str:
        return f"unix://{self.path}" if self.path else f"tcp://{self.host}:{self.port}"


async def command(address: Address, line: str, payload: bytes | None = None) -> str:
    """Send one command (with a ``<<`` payload when given) and return HAProxy's whole answer."""
    if address.path is not None:
        reader, writer = await asyncio.open_unix_connection(address.path, limit=_MAX_ANSWER)
    else:
        reader, writer = await asyncio.open_connection(address.host, address.port, limit=_MAX_ANSWER)
    try:
        if payload is None:
            writer.write(line.encode() + b"\n")
        else:
            # The payload ends at the first empty line: PEM has none, so strip trailing blank lines.
            writer.write(line.encode() + b" <<\n" + payload.strip(b"\n") + b"\n\n")
        await writer.drain()
        answer = await reader.read(_MAX_ANSWER)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return answer.decode(errors="replace")


async def version(address: Address) -> tuple[int, int]:
    """HAProxy's (major, minor) version from ``show info``."""
    answer = await command(address, "show info")
    found = re.search(r"^Version:\s*(\d+)\.(\d+)", answer, re.M)
    if found is None:
        raise UpdateError(ACTION, str(address), "show info has no Version line (is this HAProxy?)")
    return int(found.group(1)), int(found.group(2))


def _check(answer: str, address: Address, what: str, *expected: str) -> None:
    if not any(e.lower() in answer.lower() for e in expected):
        reason = " ".join(answer.split())[:300] or "empty answer"
        # HAProxy refused the content or the name: the same request fails the same way again.
        retryable = not any(w in answer.lower() for w in ("unknown", "can't", "unable", "not found"))
        raise UpdateError(ACTION, str(address), f"{what}: {reason}", retryable=retryable)


async def _replace(address: Address, kind: str, path: str, pem: bytes) -> None:
    answer = await command(address, f"set ssl {kind} {path}", pem)
    try:
        _check(answer, address, f"set ssl {kind} {path}", "transaction created", "transaction updated")
        _check(await command(address, f"commit ssl {kind} {path}"), address, f"commit ssl {kind}", "success")
    except BaseException:
        # Leave no half-done transaction behind (the next attempt would only update it).
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(command(address, f"abort ssl {kind} {path}"), _ABORT_TIMEOUT)
        raise


async def apply(
    address: str,
    crt_path: str,
    crt_pem: bytes,
    *,
    ca_path: str | None = None,
    ca_pem: bytes | None = None,
    policy: UpdatePolicy | None = None,
) -> tuple[int, int]:
    """Hand HAProxy the new certificate (and CA file from 2.5 on); returns HAProxy's version."""
    where = Address.parse(address)
    if any(c in crt_path for c in " \n") or (ca_path and any(c in ca_path for c in " \n")):
        raise UpdateError(
            ACTION, str(where), "paths with spaces or newlines cannot be named on the runtime API"
        )

    async def once() -> tuple[int, int]:
        found = await version(where)
        await _replace(where, "cert", crt_path, crt_pem)
        if ca_path is not None and ca_pem is not None and found >= CA_FILE_VERSION:
            await _replace(where, "ca-file", ca_path, ca_pem)
        return found

    return await with_retries(ACTION, str(where), once, policy or UpdatePolicy())
