"""Endpoint address parsing follows SPIFFE_Workload_Endpoint.md §4."""

from __future__ import annotations

import pytest

from spiffe_bridge.address import ENV_VAR, parse, resolve
from spiffe_bridge.errors import AddressError


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("unix:///tmp/agent.sock", "/tmp/agent.sock"),
        ("unix:/tmp/agent.sock", "/tmp/agent.sock"),
        ("/run/spire/agent/public/api.sock", "/run/spire/agent/public/api.sock"),
    ],
)
def test_unix_forms(value: str, path: str) -> None:
    ep = parse(value)
    assert ep.kind == "unix"
    assert ep.path == path
    assert ep.grpc_target == "unix:" + path
    assert ep.uri == "unix://" + path


@pytest.mark.parametrize(
    ("value", "target"),
    [("tcp://127.0.0.1:8000", "ipv4:127.0.0.1:8000"), ("tcp://[::1]:9000", "ipv6:[::1]:9000")],
)
def test_tcp_forms(value: str, target: str) -> None:
    ep = parse(value)
    assert ep.kind == "tcp"
    assert ep.grpc_target == target
    assert parse(ep.uri) == ep


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("relative/path.sock", "not absolute"),
        ("unix:relative.sock", "absolute path"),
        ("unix://host/tmp/a.sock", "authority"),
        ("unix://user@host/tmp/a.sock", "user info"),
        ("unix:///tmp/a.sock?x=1", "query"),
        ("unix:///tmp/a.sock#frag", "fragment"),
        ("unix://", "no path"),
        ("tcp://localhost:8000", "IP address"),
        ("tcp://127.0.0.1", "port"),
        ("tcp://127.0.0.1:0", "port"),
        ("tcp://127.0.0.1:8000/path", "path"),
        ("tcp://127.0.0.1:8000?q", "query"),
        ("tcp://127.0.0.1:8000#f", "fragment"),
        ("tcp://u:p@127.0.0.1:8000", "user info"),
        ("tcp:127.0.0.1:8000", "tcp://IP:port"),
        ("tcp://127.0.0.1:99999", "invalid port"),
        ("http://127.0.0.1:80", "unsupported scheme"),
        (" /tmp/a.sock", "whitespace"),
    ],
)
def test_rejected_with_reason(value: str, reason: str) -> None:
    with pytest.raises(AddressError, match=reason):
        parse(value)


def test_env_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "unix:///tmp/from-env.sock")
    assert resolve(None).path == "/tmp/from-env.sock"
    assert resolve("/tmp/explicit.sock").path == "/tmp/explicit.sock"


def test_missing_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(AddressError, match=ENV_VAR):
        resolve(None)


def test_unix_socket_path_is_bounded_by_sun_path() -> None:
    """A path over 107 bytes cannot be connected to: refused up front instead of retried forever."""
    longest = "/" + "a" * 106
    assert parse(longest).path == longest
    assert parse("unix://" + longest).path == longest
    for too_long in ("/" + "a" * 107, "unix://" + "/" + "a" * 107, "/" + "é" * 54):  # é: 2 bytes
        with pytest.raises(AddressError, match="limit is 107"):
            parse(too_long)
    with pytest.raises(AddressError, match="cannot be encoded"):
        parse("/tmp/\ud800.sock")
