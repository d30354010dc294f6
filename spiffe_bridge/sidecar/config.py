"""The sidecar's configuration: spiffe-helper's ``helper.conf`` keys plus this project's additions.

``load(path)`` reads HCL (spiffe-helper's format, the default), TOML
(``.toml``) or JSON (``.json``), checks every key against the tables declared in
:mod:`spiffe_bridge.sidecar.settings`, applies environment overrides
(:mod:`spiffe_bridge.sidecar.env_overrides`) and spiffe-helper's validation rules, and
returns a frozen :class:`Config`. Problems raise :class:`ConfigError` naming
the key and line; doubtful values (decimal file modes, keys ignored in
one-shot mode) become ``Config.warnings``.
"""

from __future__ import annotations

import csv
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spiffe_bridge.address import ENV_VAR as ENDPOINT_ENV
from spiffe_bridge.address import parse as parse_address
from spiffe_bridge.errors import AddressError, SpiffeIdError
from spiffe_bridge.fileset.names import names_clash
from spiffe_bridge.formats.options import FormatError, check_key_file_mode
from spiffe_bridge.sidecar import env_overrides
from spiffe_bridge.sidecar.blocks import (
    BrokerConfig,
    HealthConfig,
    JwtSvidConfig,
    MetricsConfig,
    OutputConfig,
)
from spiffe_bridge.sidecar.config_text import parse_text
from spiffe_bridge.sidecar.hcl import HclObject
from spiffe_bridge.sidecar.schema import ConfigError, Issues, check_object, declared, defaults, keys_of, where
from spiffe_bridge.sidecar.settings import TOP_KEYS, Config
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

    jwt_svids = _jwt_svids(v["jwt_svids"], "jwt_svids")
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
    port = hc["bind_port"] or HealthConfig.bind_port
    if not 0 <= port <= 65535:
        raise ConfigError(f"'health_checks.bind_port' {port} is not a TCP port")
    if v["health_max_stall"] <= 0:
        raise ConfigError(f"{where('health_max_stall', line('health_max_stall'))} must be longer than 0s")
    metrics = MetricsConfig(v["metrics"]["enabled"], v["metrics"]["path"] or MetricsConfig.path)
    health = HealthConfig(
        hc["listener_enabled"],
        port,
        hc["liveness_path"] or HealthConfig.liveness_path,
        hc["readiness_path"] or HealthConfig.readiness_path,
        v["health_bind_address"] or HealthConfig.bind_address,
        v["health_max_disconnected"],
        v["health_max_stall"],
    )
    paths = [health.liveness_path, health.readiness_path] + ([metrics.path] if metrics.enabled else [])
    if len(set(paths)) != len(paths) or not all(p.startswith("/") for p in paths):
        raise ConfigError("health and metrics paths must start with '/' and differ from each other")
    if v["reload_command"] == [] and "reload_command" in raw:
        raise ConfigError(f"{where('reload_command', line('reload_command'))} is an empty argv list")
    # Every declared field takes its key's value, unless converted here.
    converted: dict[str, Any] = {
        "agent_address": _resolve_address(v["agent_address"], env, line("agent_address")),
        "cmd_args": split_cmd_args(v["cmd_args"]),
        "jwt_svids": tuple(jwt_svids),
        "renew_signal": renew,
        "health": health,
        "metrics": metrics,
        "outputs": outputs,
        "reload_command": tuple(v["reload_command"]),
        "broker": broker,
    }
    fields = {attr: converted.get(attr, v[key.name]) for attr, key in declared(Config)}
    return Config(source=source, warnings=tuple(issues.warnings), **fields)


def _jwt_svids(items: list[Mapping[str, Any]], name: str) -> list[JwtSvidConfig]:
    """The ``jwt_svids`` entries of the top level or of an output (``name`` says which, for errors)."""
    specs = []
    for i, item in enumerate(items):
        for key in ("jwt_svid_file_name", "jwt_audience"):
            if not item.get(key):
                raise ConfigError(f"'{key}' is required in '{name}[{i}]'")
        specs.append(
            JwtSvidConfig(
                item["jwt_audience"], tuple(item.get("jwt_extra_audiences", [])), item["jwt_svid_file_name"]
            )
        )
    return specs


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
            if names_clash(name, other):
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
    fixed = {key.name for key in keys_of(OutputConfig)}
    options = {k: val for k, val in item.items() if k not in fixed}
    uid = item.get("uid", -1)
    gid = item.get("gid", -1)
    entries = raw.get("outputs")
    entry = entries[index] if isinstance(entries, list) and index < len(entries) else entries
    line = entry.line if isinstance(entry, HclObject) else None
    option_lines = dict(entry.key_lines) if isinstance(entry, HclObject) else {}
    if item.get("jwt_svids") and not (item.get("workload_pid_file") or item.get("workload_pid") is not None):
        raise ConfigError(
            f"{where(name + '.jwt_svids', option_lines.get('jwt_svids'))} needs 'workload_pid' or "
            "'workload_pid_file' on its output (the bridge's own tokens are the top-level 'jwt_svids')"
        )
    return OutputConfig(
        format=item["format"],
        dir=item["dir"],
        layout=item.get("layout", OutputConfig.layout),
        uid=None if uid < 0 else uid,
        gid=None if gid < 0 else gid,
        options=options,
        line=line,
        option_lines=option_lines,
        workload_pid_file=item.get("workload_pid_file", ""),
        workload_pid=_workload_pid(name, item, option_lines),
        jwt_svids=tuple(_jwt_svids(item.get("jwt_svids", []), f"{name}.jwt_svids")),
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
