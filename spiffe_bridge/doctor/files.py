"""Checks of what the sidecar configuration points at: directories, pid file, command, health port,
and the consistency of linkerd and envoy-sds outputs with what the agent serves."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import stat
import tempfile

from cryptography.hazmat.primitives.serialization import Encoding

from spiffe_bridge.doctor.agent import owner_mode
from spiffe_bridge.doctor.result import CheckResult, failed, passed
from spiffe_bridge.errors import SpiffeBridgeError
from spiffe_bridge.formats import X509Options
from spiffe_bridge.formats import linkerd as linkerd_format
from spiffe_bridge.inspect.detect import Found, envoy_secret, linkerd_env
from spiffe_bridge.inspect.readers import ReadError, read_bytes
from spiffe_bridge.spiffeid import SpiffeId
from spiffe_bridge.x509bundle import X509Bundle
from spiffe_bridge.x509check import verify_chain
from spiffe_bridge.x509context import X509Context

_MOUNTINFO = "/proc/self/mountinfo"


def filesystem_of(path: str) -> str:
    """``fstype on mountpoint`` for the mount holding ``path`` (longest mount-point prefix)."""
    real = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open(_MOUNTINFO, encoding="utf-8") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mount = fields[4].replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, right.split()[0]
    except OSError:
        return "unknown"
    return f"{kind} on {best}" if best else kind


def _probe(directory: str) -> OSError | None:
    """Create and remove a file in ``directory``: a test that root, ACLs and ro mounts cannot fool."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".doctor-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc
    return None


def _missing(name: str, directory: str) -> CheckResult:
    """A directory the sidecar's writer will create: its nearest existing ancestor must be writable."""
    parent = os.path.dirname(os.path.abspath(directory))
    while not os.path.isdir(parent) and parent != os.path.dirname(parent):
        parent = os.path.dirname(parent)
    error = _probe(parent)
    if error is None:
        return passed(
            name, f"does not exist yet; the sidecar creates it under {parent} ({filesystem_of(parent)})"
        )
    code = errno.errorcode.get(error.errno or 0, "error")
    return failed(
        name,
        f"does not exist and uid {os.geteuid()} cannot create it in {parent} ({code})",
        f"mkdir -p {directory} and give it to the sidecar's user",
    )


def cert_dir(directory: str) -> CheckResult:
    """The output directory is (or can be made) a directory this user writes into; filesystem, owner, mode."""
    name = f"cert_dir {directory}"
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return _missing(name, directory)
    except OSError as exc:
        return failed(name, f"cannot stat: {exc.strerror}", "fix the permissions of its parent directories")
    if not stat.S_ISDIR(st.st_mode):
        return failed(name, "is not a directory", "point cert_dir / the output's dir at a directory")
    where = f"{filesystem_of(directory)}, {owner_mode(st)}"
    error = _probe(directory)
    if error is not None:
        code = errno.errorcode.get(error.errno or 0, "error")
        return failed(
            name,
            f"not writable by uid {os.geteuid()} ({code}; {where})",
            f"chown the directory to the sidecar's user or run it as {owner_mode(st).split()[0]}",
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o002 and not mode & stat.S_ISVTX:
        return failed(
            name,
            f"world-writable without the sticky bit ({where})",
            f"chmod o-w {directory} (others could swap files)",
        )
    return passed(name, f"writable; {where}")


def pid_file(path: str) -> CheckResult:
    """The pid file names a running process (the one ``renew_signal`` goes to)."""
    name = "pid_file_name"
    if not path:
        return passed(name, "not configured")
    try:
        text = read_bytes(path).decode("ascii", errors="replace").strip()
    except ReadError as exc:
        return failed(name, str(exc), "start the process that writes it, or fix pid_file_name")
    if not text.isdigit():
        return failed(
            name, f"{path} does not hold a process id ({text[:20]!r})", "fix the process that writes it"
        )
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return failed(name, f"{path}: process {pid} is not running (stale pid file)", "restart the process")
    except PermissionError:
        return passed(name, f"{path}: process {pid} runs (as another user: signalling it needs that user)")
    return passed(name, f"{path}: process {pid} runs")


def command(label: str, cmd: str) -> CheckResult:
    """``cmd`` (or ``reload_command``'s program) resolves to an executable."""
    if not cmd:
        return passed(label, "not configured")
    found = shutil.which(cmd)
    if found is None:
        where = "not executable or missing" if os.sep in cmd else "not found in $PATH"
        return failed(label, f"{cmd!r} {where}", "install it or give the absolute path of an executable")
    return passed(label, f"{cmd} -> {found}")


def port_free(host: str, port: int) -> CheckResult:
    """The health listener's port can be bound (nothing else, e.g. a running sidecar, holds it)."""
    name = f"health port {host}:{port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            code = errno.errorcode.get(exc.errno or 0, "error")
            return failed(
                name, f"cannot bind: {code} {exc.strerror}", "stop what listens there or change bind_port"
            )
    return passed(name, "free")


def linkerd_output(directory: str, options: X509Options, ctx: X509Context) -> CheckResult:
    """The SVID whose ID equals the env file's SERVER_ID chains to its TRUST_ANCHORS."""
    path = os.path.join(directory, options.linkerd_env_file_name)
    name = f"linkerd {path}"
    found = Found("linkerd")
    try:
        linkerd_env(found, read_bytes(path), path)
    except ReadError as exc:
        return failed(name, str(exc), "run the sidecar once so it writes the env file")
    server_id = found.env.get(linkerd_format.SERVER_ID, "")
    match = next((s for s in ctx.svids if str(s.spiffe_id) == server_id), None)
    if match is None:
        have = ", ".join(str(s.spiffe_id) for s in ctx.svids)
        return failed(
            name,
            f"{linkerd_format.SERVER_ID} {server_id!r} is not an SVID the agent serves ({have})",
            "set the output's spiffe_id/hint to the proxy's identity and let the sidecar rewrite the file",
        )
    try:
        sid = SpiffeId.parse(server_id)
        anchors = found.bundles.get(sid.trust_domain.name, [])
        der = b"".join(c.public_bytes(Encoding.DER) for c in anchors)
        verify_chain(sid, match.cert_chain, X509Bundle.parse_der(sid.trust_domain, der))
    except SpiffeBridgeError as exc:
        return failed(
            name,
            f"{server_id} does not chain to {linkerd_format.TRUST_ANCHORS}: {exc}",
            "the roots changed: let the sidecar rewrite the env file and restart the proxy",
        )
    return passed(name, f"{server_id} chains to {linkerd_format.TRUST_ANCHORS}")


def envoy_output(directory: str, options: X509Options) -> CheckResult:
    """The three SDS secret names differ, and each file's Secret carries its configured name."""
    name = f"envoy-sds {directory}"
    wanted = {
        options.envoy_certificate_file_name: options.envoy_certificate_secret_name,
        options.envoy_bundle_file_name: options.envoy_bundle_secret_name,
        options.envoy_all_bundles_file_name: options.envoy_all_bundles_secret_name,
    }
    if len(set(wanted.values())) != len(wanted):
        return failed(
            name,
            f"secret names are not distinct: {sorted(wanted.values())}",
            "give envoy_certificate_secret_name, envoy_bundle_secret_name and envoy_all_bundles_secret_name "
            "different values",
        )
    found = Found("envoy-sds")
    for file_name, secret in wanted.items():
        path = os.path.join(directory, file_name)
        try:
            envoy_secret(found, read_bytes(path), file_name, path)
        except ReadError as exc:
            return failed(name, str(exc), "run the sidecar once so it writes the SDS files")
        if found.secret_names[path] != secret:
            return failed(
                name,
                f"{file_name} holds secret {found.secret_names[path]!r}, the configuration says {secret!r}",
                "let the sidecar rewrite the files (and use the same names in Envoy's sds_config)",
            )
    return passed(name, "secret names " + ", ".join(f"{f}={n}" for f, n in wanted.items()))
