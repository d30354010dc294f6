"""Workload API endpoint addresses (SPIFFE_Workload_Endpoint.md §4).

Explicit argument first, else ``SPIFFE_ENDPOINT_SOCKET``; anything the spec
forbids is rejected with the reason. The socket need not exist yet: clients
wait for it (gRPC ``wait_for_ready``) instead of failing at construction.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from spiffe_bridge.errors import AddressError

ENV_VAR = "SPIFFE_ENDPOINT_SOCKET"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed endpoint: a Unix socket path or a TCP IP and port."""

    kind: Literal["unix", "tcp"]
    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def grpc_target(self) -> str:
        """The target string grpc understands for this endpoint."""
        if self.kind == "unix":
            return "unix:" + self.path
        if ":" in self.host:
            return f"ipv6:[{self.host}]:{self.port}"
        return f"ipv4:{self.host}:{self.port}"

    @property
    def uri(self) -> str:
        """The canonical URI form (``unix:///p`` or ``tcp://ip:port``)."""
        if self.kind == "unix":
            return "unix://" + self.path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    def __str__(self) -> str:
        return self.uri


def unreachable_reason(endpoint: Endpoint) -> str | None:
    """Why this process can never open the endpoint's Unix socket as it stands, or None.

    Only causes that waiting does not cure count: no permission on the socket or a
    directory on its path (EACCES), or a path that is not a socket. A missing socket
    or a refused connection is None: the agent may still be starting.
    """
    if endpoint.kind != "unix":
        return None
    import errno
    import socket
    import stat

    try:
        if not stat.S_ISSOCK(os.stat(endpoint.path).st_mode):
            return f"{endpoint.path} exists but is not a socket"
    except PermissionError:
        return f"permission denied looking up {endpoint.path} (uid {os.getuid()}, gid {os.getgid()})"
    except OSError:
        return None  # missing: it may appear later
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(endpoint.path)
        except PermissionError:
            return f"permission denied opening {endpoint.path} (uid {os.getuid()}, gid {os.getgid()})"
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                return f"a component of {endpoint.path} is not a directory"
            return None
    return None


def resolve(address: str | None = None) -> Endpoint:
    """Return the endpoint from ``address``, else from ``SPIFFE_ENDPOINT_SOCKET``."""
    if address is None or address == "":
        address = os.environ.get(ENV_VAR, "")
        if not address:
            raise AddressError(
                f"no Workload API address: pass one explicitly or set {ENV_VAR} "
                "(e.g. unix:///tmp/spire-agent/public/api.sock)"
            )
    return parse(address)


def parse(address: str) -> Endpoint:
    """Parse one address string; raise AddressError that says what is wrong."""
    value = address.strip()
    if value != address or not value:
        raise AddressError(f"address {address!r} is empty or has surrounding whitespace")
    if value.startswith("/"):
        return _unix(value, address)
    if value.startswith("unix:"):
        return _parse_unix(value)
    if value.startswith("tcp:"):
        return _parse_tcp(value)
    scheme = value.partition(":")[0] if ":" in value else ""
    if scheme:
        raise AddressError(
            f"address {address!r} has unsupported scheme {scheme!r}; use unix:///path or tcp://IP:port"
        )
    raise AddressError(
        f"address {address!r} is not absolute; use unix:///absolute/path, an absolute path, or tcp://IP:port"
    )


def _unix(path: str, original: str) -> Endpoint:
    if not path.startswith("/"):
        raise AddressError(f"unix address {original!r} must have an absolute path")
    if "\x00" in path:
        raise AddressError(f"unix address {original!r} contains a NUL byte")
    return Endpoint("unix", path=path)


def _parse_unix(value: str) -> Endpoint:
    parts = urlsplit(value)
    if parts.query or "?" in value:
        raise AddressError(f"unix address {value!r} must not have a query")
    if parts.fragment or "#" in value:
        raise AddressError(f"unix address {value!r} must not have a fragment")
    if value.startswith("unix://"):
        if parts.netloc:
            if "@" in parts.netloc:
                raise AddressError(f"unix address {value!r} must not have user info")
            raise AddressError(
                f"unix address {value!r} must not have an authority ({parts.netloc!r}); "
                "use three slashes: unix:///path"
            )
    elif not value.startswith("unix:/"):
        raise AddressError(f"unix address {value!r} must have an absolute path")
    if not parts.path:
        raise AddressError(f"unix address {value!r} has no path")
    return _unix(parts.path, value)


def _parse_tcp(value: str) -> Endpoint:
    if not value.startswith("tcp://"):
        raise AddressError(f"tcp address {value!r} must be of the form tcp://IP:port")
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise AddressError(f"tcp address {value!r} must not have user info")
    if parts.path:
        raise AddressError(f"tcp address {value!r} must not have a path")
    if parts.query or "?" in value:
        raise AddressError(f"tcp address {value!r} must not have a query")
    if parts.fragment or "#" in value:
        raise AddressError(f"tcp address {value!r} must not have a fragment")
    host = parts.hostname or ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise AddressError(
            f"tcp address {value!r} must use an IP address, not a host name ({host!r})"
        ) from None
    try:
        port = parts.port
    except ValueError:
        raise AddressError(f"tcp address {value!r} has an invalid port") from None
    if port is None or port == 0:
        raise AddressError(f"tcp address {value!r} must include a non-zero port")
    return Endpoint("tcp", host=str(ip), port=port)
