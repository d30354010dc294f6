"""Checks of the Workload API endpoint and what it serves.

Order matters: the socket must exist, be a socket and accept this user's
connection before HTTP/2, the security header and identities can be asked about;
:func:`agent_checks` runs them in order and marks later ones as not checked once
one fails. Every network step has a deadline.
"""

from __future__ import annotations

import datetime as dt
import errno
import grp
import os
import pwd
import socket
import stat
from collections.abc import Iterator
from typing import Any

import grpc

from spiffe_bridge._proto import workload_pb2 as pb
from spiffe_bridge._wire import HEADER_KEY, METADATA, Rpc
from spiffe_bridge.address import Endpoint
from spiffe_bridge.client import decode_x509_context
from spiffe_bridge.doctor.identity import permission_denied_help
from spiffe_bridge.doctor.result import CheckResult, failed, passed, skipped
from spiffe_bridge.errors import SpiffeBridgeError
from spiffe_bridge.x509context import X509Context

#: The client connection preface and an empty SETTINGS frame (RFC 9113 section 3.4).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS = 0x4
_AGENT_FIX = (
    "start the SPIRE agent, or point agent_address / --address / SPIFFE_ENDPOINT_SOCKET at its socket"
)


def owner_mode(st: os.stat_result) -> str:
    """``user:group mode`` of a stat result (numbers when the names are unknown)."""
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group} {stat.S_IMODE(st.st_mode):04o}"


def socket_exists(path: str) -> CheckResult:
    """The socket path exists."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return failed("socket exists", f"{path} does not exist", _AGENT_FIX)
    except PermissionError:
        return failed(
            "socket exists",
            f"{path}: a parent directory is not searchable by uid {os.geteuid()} (EACCES)",
            "grant this user x on every parent directory, or run as the agent's socket group",
        )
    return passed("socket exists", f"{path} ({owner_mode(st)})")


def is_socket(path: str) -> CheckResult:
    """The path is a Unix socket, not a file or directory left behind."""
    mode = os.stat(path).st_mode
    if stat.S_ISSOCK(mode):
        return passed("is a socket", f"{path} is a Unix socket")
    kind = "directory" if stat.S_ISDIR(mode) else "regular file" if stat.S_ISREG(mode) else "not a socket"
    return failed("is a socket", f"{path} is a {kind}", "point the address at the agent's socket file")


def _connect(endpoint: Endpoint, timeout: float) -> socket.socket:
    if endpoint.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = endpoint.path
    else:
        family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        target = (endpoint.host, endpoint.port)
    sock.settimeout(timeout)
    try:
        sock.connect(target)
    except OSError:
        sock.close()
        raise
    return sock


def connectable(endpoint: Endpoint, timeout: float) -> CheckResult:
    """This user can connect; EACCES and a stale socket are named."""
    try:
        _connect(endpoint, timeout).close()
    except PermissionError:
        owner = owner_mode(os.stat(endpoint.path)) if endpoint.kind == "unix" else ""
        return failed(
            "connectable",
            f"EACCES: uid {os.geteuid()} gid {os.getegid()} may not connect to {endpoint} ({owner})",
            "run as the socket's owner or group (write permission is needed), or relax its mode",
        )
    except ConnectionRefusedError:
        return failed("connectable", f"{endpoint}: connection refused (nobody listening)", _AGENT_FIX)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, "error")
        return failed("connectable", f"{endpoint}: {name} {exc.strerror or exc}", _AGENT_FIX)
    return passed("connectable", f"uid {os.geteuid()} connects to {endpoint}")


def answers_http2(endpoint: Endpoint, timeout: float) -> CheckResult:
    """The server answers the HTTP/2 preface with a SETTINGS frame (gRPC needs HTTP/2)."""
    try:
        with _connect(endpoint, timeout) as sock:
            sock.sendall(_H2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except OSError as exc:
        return failed("answers HTTP/2", f"{endpoint}: {exc}", "check that the agent is healthy")
    if len(head) == 9 and head[3] == _SETTINGS:
        return passed("answers HTTP/2", "the server sent an HTTP/2 SETTINGS frame")
    seen = head[:9].decode("ascii", errors="replace").strip() or "nothing"
    return failed(
        "answers HTTP/2",
        f"{endpoint} does not speak HTTP/2 (answered {seen!r})",
        "this is not a Workload API socket; use the SPIRE agent's (or relay's) socket",
    )


def _fetch(endpoint: Endpoint, timeout: float, metadata: Any) -> Any:
    with grpc.insecure_channel(endpoint.grpc_target) as channel:
        call = channel.unary_stream(
            Rpc.FETCH_X509_SVID.path,
            request_serializer=pb.X509SVIDRequest.SerializeToString,
            response_deserializer=pb.X509SVIDResponse.FromString,
        )(pb.X509SVIDRequest(), metadata=metadata, timeout=timeout)
        try:
            return next(iter(call))
        finally:
            call.cancel()  # type: ignore[no-untyped-call]


def honours_header(endpoint: Endpoint, timeout: float) -> CheckResult:
    """A call without the ``workload.spiffe.io`` header is refused with InvalidArgument."""
    header = HEADER_KEY
    try:
        _fetch(endpoint, timeout, None)
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return passed("honours the header", f"a call without {header} is refused with InvalidArgument")
        return failed(
            "honours the header",
            f"a call without {header} got {code.name}: {exc.details()}",
            "use a Workload API implementation that enforces the security header (SPIRE agent, relay)",
        )
    except StopIteration:
        pass
    return failed(
        "honours the header",
        f"the server answered a call without the {header} header",
        "this endpoint is not a compliant Workload API: do not expose it to workloads",
    )


def fetch_message(endpoint: Endpoint, timeout: float) -> Any:
    """The agent's first X509SVIDResponse as sent, not validated (grpc.RpcError on failure)."""
    return _fetch(endpoint, timeout, METADATA)


def identity_issued(message: Any, error: grpc.RpcError | None) -> tuple[CheckResult, X509Context | None]:
    """The agent issued at least one valid X.509-SVID to this process."""
    if error is not None:
        code = error.code()
        if code == grpc.StatusCode.PERMISSION_DENIED:
            detail, fix = permission_denied_help()
            return failed("identity issued", detail, fix), None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            detail, fix = "no answer in time (the agent may still be attesting this process)", _AGENT_FIX
            return failed("identity issued", detail, fix), None
        details = error.details()
        return failed("identity issued", f"{code.name}: {details}", "see the agent's log"), None
    try:
        ctx = decode_x509_context(message)
    except SpiffeBridgeError as exc:
        return failed(
            "identity issued", f"the agent's SVIDs are not valid here: {exc}", "see the clock check"
        ), None
    ids = ", ".join(str(s.spiffe_id) for s in ctx.svids)
    return passed("identity issued", f"{len(ctx.svids)} X.509-SVID(s): {ids}"), ctx


def _leaf_times(message: Any) -> Iterator[tuple[str, dt.datetime, dt.datetime]]:
    from cryptography import x509

    for item in message.svids:
        try:
            leaf = x509.load_der_x509_certificate(item.x509_svid)  # the first DER element is the leaf
        except ValueError:
            continue
        yield item.spiffe_id, leaf.not_valid_before_utc, leaf.not_valid_after_utc


def clock_skew(message: Any, now: dt.datetime | None = None) -> CheckResult:
    """This host's clock is not behind the agent's: every SVID's not_before is already past."""
    now = now or dt.datetime.now(dt.UTC)
    times = list(_leaf_times(message))
    if not times:
        return failed("clock skew", "no parsable SVID to compare the clock with", "see the identity check")
    for sid, not_before, not_after in times:
        if not_before > now:
            ahead = (not_before - now).total_seconds()
            return failed(
                "clock skew",
                f"{sid} is not valid for another {ahead:.0f}s (not_before {not_before.isoformat()}): "
                "this clock is behind the agent's",
                "synchronise the clocks (chronyd/systemd-timesyncd) on this host and the agent's",
            )
        if not_after <= now:
            return failed(
                "clock skew",
                f"{sid} expired at {not_after.isoformat()} by this clock (clock ahead, or a stale SVID)",
                "synchronise the clocks; if they agree, the agent cannot renew (check its server connection)",
            )
    margin = min((now - nb).total_seconds() for _, nb, _ in times)
    return passed("clock skew", f"every SVID's not_before is in the past (newest {margin:.0f}s ago)")


def svid_selected(ctx: X509Context, hint: str, spiffe_id: str) -> CheckResult:
    """The configured hint / SPIFFE ID names an SVID the agent serves."""
    have = ", ".join(f"{s.spiffe_id} (hint {s.hint!r})" for s in ctx.svids)
    if not hint and not spiffe_id:
        return passed(
            "hint / SPIFFE ID", f"none configured; the default SVID {ctx.default_svid.spiffe_id} is used"
        )
    try:
        svid = ctx.svid(hint=hint or None, spiffe_id=spiffe_id or None)
    except LookupError:
        wanted = " ".join(f"{k}={v!r}" for k, v in (("hint", hint), ("spiffe_id", spiffe_id)) if v)
        return failed(
            "hint / SPIFFE ID",
            f"no SVID with {wanted}; the agent serves: {have}",
            "set the hint/SPIFFE ID to one of those, or fix the registration entry",
        )
    return passed("hint / SPIFFE ID", f"{svid.spiffe_id} (hint {svid.hint!r}) is served")


def agent_checks(
    endpoint: Endpoint, hint: str = "", spiffe_id: str = "", timeout: float = 10.0
) -> tuple[list[CheckResult], X509Context | None]:
    """Socket, HTTP/2, header, identity, clock and selection checks, in order."""
    results: list[CheckResult] = []
    steps = ["socket exists", "is a socket"] if endpoint.kind == "unix" else []
    steps += ["connectable", "answers HTTP/2", "honours the header", "identity issued", "clock skew"]
    steps += ["hint / SPIFFE ID"]

    def stop(reason: str) -> tuple[list[CheckResult], X509Context | None]:
        done = {r.name for r in results}
        results.extend(skipped(s, reason) for s in steps if s not in done)
        return results, None

    if endpoint.kind == "unix":
        for check_path in (socket_exists, is_socket):
            results.append(check_path(endpoint.path))
            if not results[-1].ok:
                return stop(f"{results[-1].name} failed")
    for check_endpoint in (connectable, answers_http2, honours_header):
        results.append(check_endpoint(endpoint, timeout))
        if not results[-1].ok and check_endpoint is not honours_header:
            return stop(f"{results[-1].name} failed")
    message, error = None, None
    try:
        message = fetch_message(endpoint, timeout)
    except grpc.RpcError as exc:
        error = exc
    result, ctx = identity_issued(message, error)
    results.append(result)
    if message is None:
        return stop("no SVID was issued")
    results.append(clock_skew(message))
    if ctx is None:
        return stop("the SVIDs did not validate")
    results.append(svid_selected(ctx, hint, spiffe_id))
    return results, ctx
