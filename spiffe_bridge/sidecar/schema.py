"""Typed key tables for the sidecar configuration, and the coercion of raw values.

One table lists every accepted key with its type, default and meaning. The
loader checks files against it (unknown keys are errors that name the line),
environment overrides are derived from it, and the docs test reads it to make
sure ``docs/sidecar.md`` describes every key. spiffe-helper's own keys come
first; keys this project adds are marked ``ours``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spiffe_bridge.sidecar.hcl import HclObject


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key (and line when known)."""


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, default and a one-line meaning."""

    name: str
    kind: str  # str, bool, int, mode, duration, str_list, enum, object, object_list
    default: Any
    help: str
    ours: bool = False
    choices: tuple[str, ...] = ()
    fields: tuple[Key, ...] = ()
    env: bool = True  # may be overridden by an environment variable
    open: bool = False  # object(s) may carry further keys, checked by the consumer
    bounds: tuple[int, int] = (-(2**63), 2**63 - 1)  # int keys: inclusive range (default: Go's int64)

    def sub(self, name: str) -> Key | None:
        """The nested key ``name`` of an object key, or None."""
        return next((k for k in self.fields if k.name == name), None)


#: uid_t/gid_t are 32-bit and (uid_t)-1 means "no change", so -1 .. 2**32-2 are the usable ids.
_ID_BOUNDS = (-1, 2**32 - 2)

JWT_SVID_KEYS = (
    Key("jwt_audience", "str", "", "audience of the JWT-SVID (required)"),
    Key("jwt_extra_audiences", "str_list", [], "further audiences put in the same token"),
    Key("jwt_svid_file_name", "str", "", "file (under cert_dir) that receives the token (required)"),
)

HEALTH_KEYS = (
    Key("listener_enabled", "bool", False, "serve the liveness/readiness endpoints (daemon mode only)"),
    Key("bind_port", "int", 8081, "TCP port of the health server"),
    Key("liveness_path", "str", "/live", "URL path of the liveness check"),
    Key("readiness_path", "str", "/ready", "URL path of the readiness check"),
)

METRICS_KEYS = (
    Key("enabled", "bool", False, "serve Prometheus metrics", ours=True),
    Key("path", "str", "/metrics", "URL path of the metrics endpoint on the health server", ours=True),
)

#: The ``broker`` block: the SPIFFE Broker API endpoint that serves other workloads' SVIDs (docs/broker.md).
BROKER_KEYS = (
    Key("address", "str", "", "Broker API endpoint: unix:///path or tcp://IP:port (required)", ours=True),
    Key("spiffe_id", "str", "", "which of the bridge's own SVIDs authenticates it to the agent", ours=True),
    Key("hint", "str", "", "or: the hint of that SVID", ours=True),
    Key(
        "agent_id",
        "str",
        "",
        "SPIFFE ID (or trust domain) the endpoint must present; unset: a SPIRE agent of our trust domain",
        ours=True,
    ),
)

#: Keys of one ``outputs`` entry besides the format's own options (see formats.X509Options).
OUTPUT_KEYS = (
    Key("format", "str", "", "output format name (see `spiffe-bridge demo` or docs/formats.md)", ours=True),
    Key("dir", "str", "", "directory the output's files are written to (created if missing)", ours=True),
    Key(
        "layout",
        "enum",
        "symlink",
        "symlink: versioned dir + symlink swap; flat: plain files",
        ours=True,
        choices=("symlink", "flat"),
    ),
    Key(
        "uid",
        "user",
        -1,
        "owner of the written files, uid or name (-1: leave as is)",
        ours=True,
        bounds=_ID_BOUNDS,
    ),
    Key(
        "gid",
        "group",
        -1,
        "group of the written files, gid or name (-1: leave as is)",
        ours=True,
        bounds=_ID_BOUNDS,
    ),
    Key(
        "workload_pid_file",
        "str",
        "",
        "broker mode: write the SVID of the process in this pid file",
        ours=True,
    ),
    Key("workload_pid", "int", 0, "broker mode: write the SVID of this process", ours=True),
)

TOP_KEYS: tuple[Key, ...] = (
    # spiffe-helper v0.11 keys
    Key(
        "agent_address",
        "str",
        "",
        "Workload API socket: bare path or unix:///path (or tcp://IP:port); "
        "unset: SPIFFE_ENDPOINT_SOCKET, else /tmp/spire-agent/public/api.sock",
    ),
    Key("cmd", "str", "", "program started after the first write and sent renew_signal on each rotation"),
    Key("cmd_args", "str", "", "arguments of cmd, split on spaces, double quotes group (as spiffe-helper)"),
    Key("cert_dir", "str", "", "directory for the spiffe-helper-style files (default: current directory)"),
    Key("svid_file_name", "str", "", "X.509-SVID chain file (leaf first); set all three X.509 names or none"),
    Key("svid_key_file_name", "str", "", "X.509-SVID private key file (PKCS#8 PEM)"),
    Key("svid_bundle_file_name", "str", "", "trust bundle file (CA certificates, PEM)"),
    Key(
        "add_intermediates_to_bundle",
        "bool",
        False,
        "put intermediates into the bundle file instead of the SVID file",
    ),
    Key("include_federated_domains", "bool", False, "append federated trust domains' CAs to the bundle file"),
    Key("omit_expired", "bool", False, "leave expired certificates out of the written files"),
    Key("hint", "str", "", "pick the X.509- and JWT-SVID with this hint instead of the default one"),
    Key("jwt_svids", "object_list", [], "JWT-SVIDs to fetch and keep fresh", fields=JWT_SVID_KEYS, env=False),
    Key("jwt_bundle_file_name", "str", "", "JWT bundle file: JSON {trust domain: base64(JWKS)}"),
    Key("cert_file_mode", "mode", 0o644, "mode of the certificate and bundle files"),
    Key("key_file_mode", "mode", 0o600, "mode of the private key file (no group/other bits, see below)"),
    Key("jwt_bundle_file_mode", "mode", 0o600, "mode of the JWT bundle file"),
    Key("jwt_svid_file_mode", "mode", 0o600, "mode of the JWT-SVID files"),
    Key("daemon_mode", "bool", True, "keep running and rotating; false: write once and exit"),
    Key("pid_file_name", "str", "", "file holding the PID to send renew_signal to (re-read every time)"),
    Key("renew_signal", "str", "", "signal name sent on rotation, e.g. SIGHUP or SIGUSR1"),
    Key("health_checks", "object", None, "HTTP liveness/readiness endpoints", fields=HEALTH_KEYS),
    # keys this project adds
    Key(
        "outputs",
        "object_list",
        [],
        "extra outputs: format + dir + layout + format options",
        ours=True,
        fields=OUTPUT_KEYS,
        open=True,
        env=False,
    ),
    Key(
        "layout",
        "enum",
        "symlink",
        "layout of the spiffe-helper-style files in cert_dir",
        ours=True,
        choices=("flat", "symlink"),
    ),
    Key(
        "federated_layout",
        "enum",
        "merged",
        "with include_federated_domains: merged into the bundle file (spiffe-helper) or per-trust-domain",
        ours=True,
        choices=("merged", "per-trust-domain"),
    ),
    Key(
        "log_level",
        "enum",
        "info",
        "debug, info, warning or error",
        ours=True,
        choices=("debug", "info", "warning", "error"),
    ),
    Key(
        "log_format",
        "enum",
        "text",
        "text or json (one object per line)",
        ours=True,
        choices=("text", "json"),
    ),
    Key("health_bind_address", "str", "127.0.0.1", "address the health/metrics server binds to", ours=True),
    Key(
        "health_max_disconnected",
        "duration",
        600.0,
        "liveness fails after the Workload API stream is down this long",
        ours=True,
    ),
    Key(
        "health_max_stall",
        "duration",
        10.0,
        "liveness fails (and systemd's watchdog is no longer fed) once the event loop is stuck this long",
        ours=True,
    ),
    Key("metrics", "object", None, "Prometheus metrics on the health server", ours=True, fields=METRICS_KEYS),
    Key(
        "broker",
        "object",
        None,
        "SPIFFE Broker API: outputs with a workload reference get that workload's SVID",
        ours=True,
        fields=BROKER_KEYS,
        env=False,
    ),
    Key(
        "on_identity_lost",
        "enum",
        "keep",
        "when the agent withdraws the identity: keep files, delete them, or report unready",
        ours=True,
        choices=("keep", "delete", "unready"),
    ),
    Key(
        "one_shot_timeout",
        "duration",
        60.0,
        "one-shot mode: how long to wait for the socket and an identity",
        ours=True,
    ),
    Key(
        "reload_command",
        "str_list",
        [],
        "argv run (no shell) after each rotation's files are written",
        ours=True,
    ),
    Key("reload_command_timeout", "duration", 30.0, "kill reload_command after this long", ours=True),
    Key(
        "allow_shared_key_file_mode",
        "bool",
        False,
        "let key_file_mode give group or other access to files holding a private key",
        ours=True,
    ),
    Key("pkcs12_password_file", "str", "", "file whose content is the PKCS#12 password", ours=True),
    Key(
        "pkcs12_password_env",
        "str",
        "SPIFFE_BRIDGE_PKCS12_PASSWORD",
        "environment variable holding the PKCS#12 password",
        ours=True,
    ),
)

TOP = Key("<top>", "object", None, "", fields=TOP_KEYS)

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
#: Longest duration any key accepts (a year): far beyond any sensible timeout, and well inside
#: what event-loop and thread timeouts can represent (threading.TIMEOUT_MAX is ~292 years).
MAX_DURATION = 8760 * 3600.0
#: Octal modes people write; the same digits read as decimal are almost surely a mistake.
_COMMON_OCTAL_MODES = {
    "400",
    "440",
    "444",
    "600",
    "640",
    "644",
    "660",
    "664",
    "666",
    "700",
    "750",
    "755",
    "770",
    "775",
    "777",
}


@dataclass
class Issues:
    """Warnings collected while reading a configuration (errors raise instead)."""

    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Record a warning to log once logging is set up."""
        self.warnings.append(message)


def where(name: str, line: int | None) -> str:
    """``'key' (line N)`` for messages."""
    return f"{name!r} (line {line})" if line else repr(name)


def parse_duration(value: Any, name: str, line: int | None) -> float:
    """Seconds from a number or a string like ``500ms``, ``30s``, ``5m``, ``1h``."""
    if isinstance(value, bool):
        raise ConfigError(f"{where(name, line)} must be a duration like 30s, got {value!r}")
    if isinstance(value, int):
        seconds = float(value) if abs(value) <= MAX_DURATION else math.copysign(math.inf, value)
    elif isinstance(value, float):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ConfigError(f"{where(name, line)} must be a duration like 30s, 5m or 500ms, got {value!r}")
    if math.isnan(seconds):
        raise ConfigError(f"{where(name, line)} must be a duration like 30s, got {value!r}")
    if seconds < 0:
        raise ConfigError(f"{where(name, line)} must not be negative")
    if seconds > MAX_DURATION:
        raise ConfigError(f"{where(name, line)} must be at most 8760h (a year), got {value!r}")
    return seconds


def parse_mode(value: Any, name: str, line: int | None, default: int, issues: Issues) -> int:
    """A file mode as spiffe-helper reads it, with a warning for decimal numbers meant as octal.

    Integers are taken as written (HCL reads ``0644`` as octal, ``420`` and
    ``644`` as decimal, like spiffe-helper) and only the permission bits are
    kept (spiffe-helper's Go file mode drops the rest too); strings are always
    octal (``"0644"``, ``"644"``, ``"0o644"``); 0 means the default.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{where(name, line)} must be a file mode like 0644, got {value!r}")
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not re.fullmatch(r"0?[0-7]{1,3}", text):
            raise ConfigError(f'{where(name, line)} must be an octal mode like "0644", got {value!r}')
        return int(text, 8) or default
    if not isinstance(value, int):
        raise ConfigError(f"{where(name, line)} must be a file mode like 0644, got {value!r}")
    if value < 0:
        raise ConfigError(f"{where(name, line)} must be positive, got {value}")
    if value.bit_length() > 32:  # Go's os.FileMode is a uint32
        raise ConfigError(f"{where(name, line)} must be a file mode like 0644, got a larger number")
    mode = value & 0o777
    if str(value) in _COMMON_OCTAL_MODES or value > 0o777:
        octal_digits = re.fullmatch(r"[0-7]{1,3}", str(value)) is not None
        issues.warn(
            f"{where(name, line)} = {value} is a decimal number: the file mode is 0o{mode:o}"
            + (" (bits above 0o777 dropped, as spiffe-helper does)" if value > 0o777 else "")
            + (f'; if you meant octal, write 0{value} or "{value}"' if octal_digits else "")
        )
    return mode or default


def coerce(key: Key, value: Any, line: int | None, issues: Issues, path: str = "") -> Any:
    """Check ``value`` against ``key``'s type and return the Python value."""
    name = path or key.name
    kind = key.kind
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where(name, line)} must be a string, got {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where(name, line)} must be true or false, got {value!r}")
        return value
    if kind in ("user", "group") and isinstance(value, str):  # a name, looked up on this host
        from spiffe_bridge.owner import lookup_id

        try:
            value = lookup_id(value, "user" if kind == "user" else "group")
        except ValueError as exc:
            raise ConfigError(f"{where(name, line)}: {exc}") from None
    if kind in ("int", "user", "group"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where(name, line)} must be an integer, got {value!r}")
        low, high = key.bounds
        if not low <= value <= high:
            shown = str(value) if value.bit_length() <= 64 else "a larger number"
            raise ConfigError(f"{where(name, line)} must be between {low} and {high}, got {shown}")
        return value
    if kind == "mode":
        return parse_mode(value, name, line, key.default, issues)
    if kind == "duration":
        return parse_duration(value, name, line)
    if kind == "enum":
        if not isinstance(value, str) or value.lower() not in key.choices:
            raise ConfigError(f"{where(name, line)} must be one of {', '.join(key.choices)}, got {value!r}")
        return value.lower()
    if kind == "str_list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where(name, line)} must be a list of strings, got {value!r}")
        return list(value)
    if kind == "object":
        if not isinstance(value, dict):
            raise ConfigError(f"{where(name, line)} must be a block {{ ... }}, got {value!r}")
        return check_object(key.fields, value, issues, name)
    if kind == "object_list":
        items = [value] if isinstance(value, dict) else value
        if not isinstance(items, list) or not all(isinstance(v, dict) for v in items):
            raise ConfigError(f"{where(name, line)} must be a list of objects [{{...}}, ...], got {value!r}")
        extra = _any_key if key.open else None
        return [check_object(key.fields, item, issues, f"{name}[{i}]", extra) for i, item in enumerate(items)]
    raise AssertionError(f"unknown key kind {kind}")  # pragma: no cover


def _any_key(name: str) -> bool:
    return True


def line_of(obj: Mapping[str, Any], key: str) -> int | None:
    """The line of ``key`` in an HCL object (None for TOML/JSON without positions)."""
    return obj.line_of(key) if isinstance(obj, HclObject) else None


def check_object(
    fields: tuple[Key, ...],
    obj: Mapping[str, Any],
    issues: Issues,
    path: str = "",
    extra: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """Coerce every key of ``obj``; unknown keys (not in ``fields``, not ``extra``) are errors."""
    known = {k.name: k for k in fields}
    out: dict[str, Any] = {}
    for name, value in obj.items():
        full = f"{path}.{name}" if path else name
        line = line_of(obj, name)
        key = known.get(name)
        if key is None:
            if extra is not None and extra(name):
                out[name] = value
                continue
            suggestion = _suggest(name, known)
            hint = f"; did you mean {suggestion!r}?" if suggestion else ""
            scope = f" in {path!r}" if path else ""
            raise ConfigError(f"unknown key {where(full, line)}{scope}{hint}")
        out[name] = coerce(key, value, line, issues, full)
    return out


def _suggest(name: str, known: Mapping[str, Key]) -> str | None:
    import difflib

    # spiffe-helper's early README spelled keys in camelCase (agentAddress, certDir).
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    if snake in known:
        return snake
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return close[0] if close else None


def defaults(fields: tuple[Key, ...]) -> dict[str, Any]:
    """Default values of a key table (objects default to their own defaults)."""
    out: dict[str, Any] = {}
    for key in fields:
        if key.kind == "object":
            out[key.name] = defaults(key.fields)
        elif isinstance(key.default, list):
            out[key.name] = list(key.default)
        else:
            out[key.name] = key.default
    return out
