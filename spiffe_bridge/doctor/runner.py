"""Which checks a setup needs: an address alone, or everything a sidecar configuration points at."""

from __future__ import annotations

from collections.abc import Mapping

from spiffe_bridge.address import parse as parse_address
from spiffe_bridge.doctor import files
from spiffe_bridge.doctor.agent import agent_checks, svid_selected
from spiffe_bridge.doctor.result import CheckResult, failed, passed, skipped
from spiffe_bridge.errors import AddressError
from spiffe_bridge.sidecar.config import Config, ConfigError


def check_address(
    address: str, hint: str = "", spiffe_id: str = "", timeout: float = 10.0
) -> list[CheckResult]:
    """The agent checks for one Workload API address."""
    try:
        endpoint = parse_address(address)
    except AddressError as exc:
        return [failed("address", str(exc), "use unix:///path/to/socket or tcp://ip:port")]
    return agent_checks(endpoint, hint, spiffe_id, timeout)[0]


def check_config(
    config: Config, environ: Mapping[str, str] | None = None, timeout: float = 10.0
) -> list[CheckResult]:
    """The agent checks for ``agent_address`` plus every file, command and output check of the config."""
    from spiffe_bridge.sidecar import plan

    try:
        endpoint = parse_address(config.agent_address)
    except AddressError as exc:
        return [failed("agent_address", str(exc), "fix agent_address in the configuration")]
    results, ctx = agent_checks(endpoint, config.hint, "", timeout)
    try:
        plans, _ = plan.build(config, environ)
    except ConfigError as exc:
        return [*results, failed("outputs", str(exc), "fix the configuration")]
    directories = [p.directory for p in plans] or ([config.cert_dir] if config.cert_dir else [])
    results += [files.cert_dir(d) for d in directories]
    results.append(files.command("cmd", config.cmd))
    if config.reload_command:
        results.append(files.command("reload_command", config.reload_command[0]))
    results.append(files.pid_file(config.pid_file_name))
    if config.health.listener_enabled:
        results.append(files.port_free(config.health.bind_address, config.health.bind_port))
    else:
        results.append(passed("health port", "health listener disabled"))
    for p in plans:
        for out in p.x509:
            label = f"{out.format} output {p.directory}"
            if out.options.hint or out.options.spiffe_id:
                if ctx is None:
                    results.append(skipped(f"{label}: hint / SPIFFE ID", "no valid SVIDs"))
                else:
                    one = svid_selected(ctx, out.options.hint or "", out.options.spiffe_id or "")
                    results.append(CheckResult(f"{label}: {one.name}", one.ok, one.detail, one.fix))
            if out.format == "linkerd":
                if ctx is None:
                    results.append(skipped(f"linkerd {p.directory}", "no valid SVIDs to compare with"))
                else:
                    results.append(files.linkerd_output(p.directory, out.options, ctx))
            elif out.format == "envoy-sds":
                results.append(files.envoy_output(p.directory, out.options))
    return results
