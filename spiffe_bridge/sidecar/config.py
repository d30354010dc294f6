"""The sidecar's configuration: spiffe-helper's ``helper.conf`` keys plus this project's additions.

``load(path)`` reads HCL (spiffe-helper's format, the default), TOML
(``.toml``) or JSON (``.json``), checks every key against the tables in
:mod:`spiffe_bridge.sidecar.schema`, applies environment overrides
(:mod:`spiffe_bridge.sidecar.env`) and spiffe-helper's validation rules, and
returns a frozen :class:`Config`. Problems raise :class:`ConfigError` naming
the key and line; doubtful values (decimal file modes, keys ignored in
one-shot mode) become ``Config.warnings``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spiffe_bridge.address import ENV_VAR as ENDPOINT_ENV
from spiffe_bridge.address import parse as parse_address
from spiffe_bridge.errors import AddressError, SpiffeIdError
from spiffe_bridge.formats.options import FormatError, check_key_file_mode
from spiffe_bridge.sidecar import env as env_overrides
from spiffe_bridge.sidecar.hcl import MAX_NESTING, HclError, HclObject, check_nesting, loads
from spiffe_bridge.sidecar.schema import TOP_KEYS, ConfigError, Issues, check_object, defaults, where
from spiffe_bridge.spiffeid import SpiffeId, TrustDomain

#: spiffe-helper's fallback socket when neither agent_address nor SPIFFE_ENDPOINT_SOCKET is set.
DEFAULT_AGENT_ADDRESS = "/tmp/spire-agent/public/api.sock"
DEFAULT_CONFIG_FILE = "helper.conf"

__all__ = [
    "DEFAULT_AGENT_ADDRESS",
    "DEFAULT_CONFIG_FILE",
    "BrokerConfig",
    "Config",
    "ConfigError",
    "HealthConfig",
    "JwtSvidConfig",
    "MetricsConfig",
    "OutputConfig",
    "load",
    "parse_text",
]


@dataclass(frozen=True)
class JwtSvidConfig:
    """One ``jwt_svids`` entry: audiences and the file the token goes to."""

    audience: str
    extra_audiences: tuple[str, ...]
    file_name: str


@dataclass(frozen=True)
class HealthConfig:
    """The ``health_checks`` block plus the bind address and liveness limit."""

    listener_enabled: bool = False
    bind_port: int = 8081
    liveness_path: str = "/live"
    readiness_path: str = "/ready"
    bind_address: str = "127.0.0.1"
    max_disconnected: float = 600.0
    max_stall: float = 10.0


@dataclass(frozen=True)
class MetricsConfig:
    """The ``metrics`` block."""

    enabled: bool = False
    path: str = "/metrics"


@dataclass(frozen=True)
class BrokerConfig:
    """The ``broker`` block (docs/broker.md): where the Broker API is and how we authenticate."""

    address: str
    spiffe_id: str = ""
    hint: str = ""
    agent_id: str = ""


@dataclass(frozen=True)
class OutputConfig:
    """One ``outputs`` entry: a format written to a directory; ``options`` go to the format."""

    format: str
    dir: str
    layout: str = "symlink"
    uid: int | None = None
    gid: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    line: int | None = None
    option_lines: Mapping[str, int] = field(default_factory=dict)
    workload_pid_file: str = ""
    workload_pid: int | None = None

    @property
    def workload(self) -> bool:
        """True when this output carries a referenced workload's SVID (broker mode)."""
        return bool(self.workload_pid_file) or self.workload_pid is not None


@dataclass(frozen=True)
class Config:
    """The validated sidecar configuration (see docs/sidecar.md for every key)."""

    source: str
    agent_address: str
    cert_dir: str
    svid_file_name: str = ""
    svid_key_file_name: str = ""
    svid_bundle_file_name: str = ""
    add_intermediates_to_bundle: bool = False
    include_federated_domains: bool = False
    omit_expired: bool = False
    hint: str = ""
    jwt_svids: tuple[JwtSvidConfig, ...] = ()
    jwt_bundle_file_name: str = ""
    cert_file_mode: int = 0o644
    key_file_mode: int = 0o600
    allow_shared_key_file_mode: bool = False
    jwt_bundle_file_mode: int = 0o600
    jwt_svid_file_mode: int = 0o600
    daemon_mode: bool = True
    cmd: str = ""
    cmd_args: tuple[str, ...] = ()
    pid_file_name: str = ""
    renew_signal: signal.Signals | None = None
    health: HealthConfig = HealthConfig()
    metrics: MetricsConfig = MetricsConfig()
    outputs: tuple[OutputConfig, ...] = ()
    layout: str = "symlink"
    federated_layout: str = "merged"
    log_level: str = "info"
    log_format: str = "text"
    on_identity_lost: str = "keep"
    one_shot_timeout: float = 60.0
    reload_command: tuple[str, ...] = ()
    reload_command_timeout: float = 30.0
    pkcs12_password_file: str = ""
    pkcs12_password_env: str = "SPIFFE_BRIDGE_PKCS12_PASSWORD"  # noqa: S105 - a variable name
    warnings: tuple[str, ...] = ()
    broker: BrokerConfig | None = None

    @property
    def x509_enabled(self) -> bool:
        """True when the spiffe-helper X.509 file set (all three names) is configured."""
        return bool(self.svid_file_name)

    @property
    def jwt_enabled(self) -> bool:
        """True when any JWT material (SVIDs or bundle) is to be written."""
        return bool(self.jwt_svids or self.jwt_bundle_file_name)

    @property
    def needs_x509(self) -> bool:
        """True when an X.509 stream is needed (legacy files or any ``outputs`` entry)."""
        return self.x509_enabled or bool(self.outputs)


def split_cmd_args(text: str) -> tuple[str, ...]:
    """Split ``cmd_args`` the way spiffe-helper does: a CSV record with space as separator.

    Double quotes group (``""`` inside quotes is a literal quote), single
    quotes do not, nothing is expanded. Consecutive spaces yield empty
    arguments, as in spiffe-helper.
    """
    if not text:
        return ()
    try:
        rows = list(csv.reader([text], delimiter=" ", quotechar='"', doublequote=True, strict=True))
    except csv.Error as exc:
        raise ConfigError(f"'cmd_args' cannot be split: {exc}") from None
    return tuple(rows[0]) if rows else ()


def parse_signal(name: str) -> signal.Signals:
    """``SIGHUP``/``HUP``/``1`` to a signal; ConfigError for anything else."""
    text = name.strip().upper()
    if text.isdigit():
        try:
            return signal.Signals(int(text))
        except ValueError:
            pass
    else:
        try:
            return signal.Signals[text if text.startswith("SIG") else "SIG" + text]
        except KeyError:
            pass
    raise ConfigError(f"'renew_signal' {name!r} is not a signal name (e.g. SIGHUP, SIGUSR1)")


def _toml_with_lines(text: str) -> HclObject:
    """Decode TOML and attach approximate key lines (first ``key =`` or ``[key]`` in the text)."""
    _checked_nesting(text)
    try:
        data = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise ConfigError(f"invalid TOML: {exc}") from None
    except RecursionError:  # a nesting the bracket scan missed: still refuse
        raise ConfigError(f"invalid TOML: values nest more than {MAX_NESTING} levels deep") from None
    lines = text.splitlines()

    def first_line(key: str) -> int | None:
        pattern = re.compile(rf'^\s*(\[\[?\s*)?"?{re.escape(key)}"?\s*(=|\]\]?)')
        return next((i + 1 for i, line in enumerate(lines) if pattern.match(line)), None)

    def convert(value: Any, line: int, depth: int) -> Any:
        if depth > MAX_NESTING:  # dotted keys (a.b.c...) nest without brackets
            raise ConfigError(f"line {line}: values are nested more than {MAX_NESTING} levels deep")
        if isinstance(value, dict):
            obj = HclObject(line)
            for k, v in value.items():
                kline = first_line(k) or line
                obj[k] = convert(v, kline, depth + 1)
                obj.key_lines[k] = kline
            return obj
        if isinstance(value, list):
            return [convert(v, line, depth + 1) for v in value]
        return value

    result: HclObject = convert(data, 1, 0)
    return result


def parse_text(text: str, kind: str) -> HclObject:
    """Decode configuration text: ``kind`` is ``hcl``, ``toml`` or ``json``."""
    if kind == "toml":
        return _toml_with_lines(text)
    if kind == "json" or (kind == "hcl" and text.lstrip().startswith("{")):
        _checked_nesting(text)
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"invalid JSON: {exc}") from None
        except RecursionError:  # a nesting the bracket scan missed: still refuse
            raise ConfigError(f"invalid JSON: values nest more than {MAX_NESTING} levels deep") from None
        if not isinstance(data, dict):
            raise ConfigError("the JSON configuration must be an object")
        return _json_object(data)
    try:
        return loads(text)
    except HclError as exc:
        raise ConfigError(f"invalid HCL: {exc}") from None


def _checked_nesting(text: str) -> None:
    try:
        check_nesting(text)
    except HclError as exc:
        raise ConfigError(str(exc)) from None


def _json_object(data: dict[str, Any]) -> HclObject:
    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            obj = HclObject(1)
            obj.update({k: convert(v) for k, v in value.items()})
            return obj
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    result: HclObject = convert(data)
    return result


def load(
    path: str | os.PathLike[str],
    *,
    daemon_mode: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, override from the environment, validate. ``daemon_mode`` is the CLI flag, if given."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(file)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(file)!r}: {exc}") from None
    kind = {".toml": "toml", ".json": "json"}.get(file.suffix.lower(), "hcl")
    try:
        return build(parse_text(text, kind), str(file), daemon_mode=daemon_mode, environ=environ)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None


def build(
    raw: HclObject,
    source: str = "<config>",
    *,
    daemon_mode: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate a decoded configuration object and build the :class:`Config`."""
    env = os.environ if environ is None else environ
    issues = Issues()
    values = defaults(TOP_KEYS)
    values.update(check_object(TOP_KEYS, raw, issues))
    for block in ("health_checks", "metrics"):
        base = defaults(next(k for k in TOP_KEYS if k.name == block).fields)
        base.update(values[block] or {})
        values[block] = base
    env_overrides.apply(values, env, issues)
    if daemon_mode is not None:
        values["daemon_mode"] = daemon_mode
    return _validate(values, raw, source, env, issues)


def _resolve_address(value: str, env: Mapping[str, str], line: int | None) -> str:
    """agent_address, else SPIFFE_ENDPOINT_SOCKET, else spiffe-helper's default path.

    Bare paths and ``unix:``/``tcp:`` URIs are both accepted as they are: a URI
    is never prefixed again (spiffe-helper builds ``unix://`` + value).
    """
    address = value or env.get(ENDPOINT_ENV, "") or DEFAULT_AGENT_ADDRESS
    try:
        parse_address(address)
    except AddressError as exc:
        fallback = ENDPOINT_ENV if env.get(ENDPOINT_ENV) else "default"
        origin = where("agent_address", line) if value else fallback
        raise ConfigError(f"{origin}: {exc}") from None
    return address


def _validate(
    v: dict[str, Any], raw: HclObject, source: str, env: Mapping[str, str], issues: Issues
) -> Config:
    def line(key: str) -> int | None:
        return raw.line_of(key) if key in raw else None

    jwt_svids = []
    for i, item in enumerate(v["jwt_svids"]):
        if not item.get("jwt_svid_file_name"):
            raise ConfigError(f"'jwt_svid_file_name' is required in 'jwt_svids[{i}]'")
        if not item.get("jwt_audience"):
            raise ConfigError(f"'jwt_audience' is required in 'jwt_svids[{i}]'")
        jwt_svids.append(
            JwtSvidConfig(
                item["jwt_audience"], tuple(item.get("jwt_extra_audiences", [])), item["jwt_svid_file_name"]
            )
        )
    x509_names = [v["svid_file_name"], v["svid_key_file_name"], v["svid_bundle_file_name"]]
    if any(x509_names) and not all(x509_names):
        raise ConfigError(
            "all or none of 'svid_file_name', 'svid_key_file_name', 'svid_bundle_file_name' must be specified"
        )
    outputs = tuple(_output(i, item, raw) for i, item in enumerate(v["outputs"]))
    broker = _broker(v["broker"], outputs, raw)
    if not (all(x509_names) or jwt_svids or v["jwt_bundle_file_name"] or outputs):
        raise ConfigError(
            "nothing to write: set the X.509 file names ('svid_file_name', 'svid_key_file_name', "
            "'svid_bundle_file_name'), 'jwt_svids', 'jwt_bundle_file_name' or 'outputs'"
        )
    _check_distinct_names(v, jwt_svids, raw)
    try:
        check_key_file_mode(
            v["key_file_mode"], v["allow_shared_key_file_mode"], where("key_file_mode", line("key_file_mode"))
        )
    except FormatError as exc:
        raise ConfigError(str(exc)) from None
    renew = parse_signal(v["renew_signal"]) if v["renew_signal"] else None
    if v["pid_file_name"] and renew is None:
        raise ConfigError(f"{where('pid_file_name', line('pid_file_name'))} needs 'renew_signal'")
    if not v["daemon_mode"]:
        if v["pid_file_name"]:
            raise ConfigError("'pid_file_name' is only supported in daemon mode (daemon_mode = false)")
        for key in ("cmd", "renew_signal", "reload_command"):
            if v[key]:
                issues.warn(f"{where(key, line(key))} is ignored because daemon_mode is false")
        if v["health_checks"]["listener_enabled"] or v["metrics"]["enabled"]:
            issues.warn("the health/metrics server is not started when daemon_mode is false")
    if v["cmd_args"] and not v["cmd"]:
        raise ConfigError(f"{where('cmd_args', line('cmd_args'))} is set but 'cmd' is not")
    hc = v["health_checks"]
    port = hc["bind_port"] or 8081
    if not 0 <= port <= 65535:
        raise ConfigError(f"'health_checks.bind_port' {port} is not a TCP port")
    if v["health_max_stall"] <= 0:
        raise ConfigError(f"{where('health_max_stall', line('health_max_stall'))} must be longer than 0s")
    metrics = MetricsConfig(v["metrics"]["enabled"], v["metrics"]["path"] or "/metrics")
    health = HealthConfig(
        hc["listener_enabled"],
        port,
        hc["liveness_path"] or "/live",
        hc["readiness_path"] or "/ready",
        v["health_bind_address"] or "127.0.0.1",
        v["health_max_disconnected"],
        v["health_max_stall"],
    )
    paths = [health.liveness_path, health.readiness_path] + ([metrics.path] if metrics.enabled else [])
    if len(set(paths)) != len(paths) or not all(p.startswith("/") for p in paths):
        raise ConfigError("health and metrics paths must start with '/' and differ from each other")
    if v["reload_command"] == [] and "reload_command" in raw:
        raise ConfigError(f"{where('reload_command', line('reload_command'))} is an empty argv list")
    return Config(
        source=source,
        agent_address=_resolve_address(v["agent_address"], env, line("agent_address")),
        cert_dir=v["cert_dir"],
        svid_file_name=v["svid_file_name"],
        svid_key_file_name=v["svid_key_file_name"],
        svid_bundle_file_name=v["svid_bundle_file_name"],
        add_intermediates_to_bundle=v["add_intermediates_to_bundle"],
        include_federated_domains=v["include_federated_domains"],
        omit_expired=v["omit_expired"],
        hint=v["hint"],
        jwt_svids=tuple(jwt_svids),
        jwt_bundle_file_name=v["jwt_bundle_file_name"],
        cert_file_mode=v["cert_file_mode"],
        key_file_mode=v["key_file_mode"],
        allow_shared_key_file_mode=v["allow_shared_key_file_mode"],
        jwt_bundle_file_mode=v["jwt_bundle_file_mode"],
        jwt_svid_file_mode=v["jwt_svid_file_mode"],
        daemon_mode=v["daemon_mode"],
        cmd=v["cmd"],
        cmd_args=split_cmd_args(v["cmd_args"]),
        pid_file_name=v["pid_file_name"],
        renew_signal=renew,
        health=health,
        metrics=metrics,
        outputs=outputs,
        layout=v["layout"],
        federated_layout=v["federated_layout"],
        log_level=v["log_level"],
        log_format=v["log_format"],
        on_identity_lost=v["on_identity_lost"],
        one_shot_timeout=v["one_shot_timeout"],
        reload_command=tuple(v["reload_command"]),
        reload_command_timeout=v["reload_command_timeout"],
        pkcs12_password_file=v["pkcs12_password_file"],
        pkcs12_password_env=v["pkcs12_password_env"],
        warnings=tuple(issues.warnings),
        broker=broker,
    )


def _check_distinct_names(v: Mapping[str, Any], jwt_svids: list[JwtSvidConfig], raw: HclObject) -> None:
    """Every file spiffe-helper's keys put into cert_dir needs its own name (else no write succeeds).

    A name that is a directory of another (``a`` and ``a/b``) collides too.
    """
    names: list[tuple[str, str]] = []
    if v["svid_file_name"]:
        names += [(k, v[k]) for k in ("svid_file_name", "svid_key_file_name", "svid_bundle_file_name")]
    names += [(f"jwt_svids[{i}].jwt_svid_file_name", j.file_name) for i, j in enumerate(jwt_svids)]
    if v["jwt_bundle_file_name"]:
        names.append(("jwt_bundle_file_name", v["jwt_bundle_file_name"]))
    seen: list[tuple[str, str]] = []
    for key, name in names:
        for other_key, other in seen:
            if name == other or name.startswith(other + "/") or other.startswith(name + "/"):
                raise ConfigError(
                    f"{_where_raw(key, raw)} and {_where_raw(other_key, raw)} both name {other!r}"
                    + ("" if name == other else f" (and {name!r})")
                    + " in cert_dir; every file needs its own name"
                )
        seen.append((key, name))


def _where_raw(key: str, raw: HclObject) -> str:
    """``where()`` for a top-level key or a ``jwt_svids[i].name`` path, with its line when known."""
    top, _, rest = key.partition("[")
    line = raw.line_of(top) if top in raw else None
    entries = raw.get(top)
    if rest and isinstance(entries, list | HclObject):
        index = int(rest.split("]")[0])
        entry = entries[index] if isinstance(entries, list) and index < len(entries) else entries
        if isinstance(entry, HclObject):
            sub = key.rsplit(".", 1)[1]
            line = entry.line_of(sub)
    return where(key, line)


def _output(index: int, item: Mapping[str, Any], raw: HclObject) -> OutputConfig:
    """Build one ``outputs`` entry; format options are checked later against the format."""
    name = f"outputs[{index}]"
    if not item.get("format"):
        raise ConfigError(f"'format' is required in {name!r}")
    if not item.get("dir"):
        raise ConfigError(f"'dir' is required in {name!r}")
    fixed = {"format", "dir", "layout", "uid", "gid", "workload_pid_file", "workload_pid"}
    options = {k: val for k, val in item.items() if k not in fixed}
    uid = item.get("uid", -1)
    gid = item.get("gid", -1)
    entries = raw.get("outputs")
    entry = entries[index] if isinstance(entries, list) and index < len(entries) else entries
    line = entry.line if isinstance(entry, HclObject) else None
    option_lines = dict(entry.key_lines) if isinstance(entry, HclObject) else {}
    return OutputConfig(
        format=item["format"],
        dir=item["dir"],
        layout=item.get("layout", "symlink"),
        uid=None if uid < 0 else uid,
        gid=None if gid < 0 else gid,
        options=options,
        line=line,
        option_lines=option_lines,
        workload_pid_file=item.get("workload_pid_file", ""),
        workload_pid=_workload_pid(name, item, option_lines),
    )


def _workload_pid(name: str, item: Mapping[str, Any], lines: Mapping[str, int]) -> int | None:
    """``workload_pid`` of an output (None when unset); at most one workload reference per output."""
    pid = item.get("workload_pid")
    if pid is None:
        return None
    at = where(f"{name}.workload_pid", lines.get("workload_pid"))
    if item.get("workload_pid_file"):
        raise ConfigError(f"{at}: set 'workload_pid' or 'workload_pid_file', not both")
    if not 0 < pid < 2**31:
        raise ConfigError(f"{at}: {pid} is not a process ID")
    return int(pid)


def _broker(
    block: Mapping[str, Any] | None, outputs: tuple[OutputConfig, ...], raw: HclObject
) -> BrokerConfig | None:
    """The ``broker`` block, required by (and only useful with) outputs that reference a workload."""
    referencing = [i for i, out in enumerate(outputs) if out.workload]
    if block is None or "broker" not in raw:
        if referencing:
            out = outputs[referencing[0]]
            key = "workload_pid" if out.workload_pid is not None else "workload_pid_file"
            at = where(f"outputs[{referencing[0]}].{key}", out.option_lines.get(key))
            raise ConfigError(f"{at} needs a 'broker' block with the Broker API 'address'")
        return None
    line = raw.line_of("broker") if "broker" in raw else None
    address = block.get("address", "")
    if not address:
        raise ConfigError(f"{where('broker', line)}: 'address' is required")
    try:
        parse_address(address)
    except AddressError as exc:
        raise ConfigError(f"{where('broker.address', line)}: {exc}") from None
    spiffe_id, hint, agent_id = block.get("spiffe_id", ""), block.get("hint", ""), block.get("agent_id", "")
    if spiffe_id and hint:
        raise ConfigError(f"{where('broker', line)}: set 'spiffe_id' or 'hint', not both")
    checks = (
        ("spiffe_id", spiffe_id, SpiffeId.parse),
        (
            "agent_id",
            agent_id,
            SpiffeId.parse if "/" in agent_id.removeprefix("spiffe://") else TrustDomain.parse,
        ),
    )
    for key, value, check in checks:
        try:
            if value:
                check(value)
        except SpiffeIdError as exc:
            raise ConfigError(f"{where('broker.' + key, line)}: {exc}") from None
    return BrokerConfig(address, spiffe_id, hint, agent_id)
