"""The configuration's blocks and list entries, each key declared once as a field (see settings.py).

``jwt_svids`` entries, ``health_checks`` (plus the two top-level health keys it
holds), ``metrics``, ``broker`` and ``outputs`` entries. An ``outputs`` entry's
format options are not declared here: each format registers the ones it reads
(:func:`spiffe_bridge.formats.format_options`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spiffe_bridge.sidecar.schema import ID_BOUNDS, declare, keys_of, setting


@dataclass(frozen=True)
class JwtSvidConfig:
    """One ``jwt_svids`` entry: audiences and the file the token goes to."""

    audience: str = field(
        metadata=declare("str", "", "Audience of the token.", name="jwt_audience", shown="required")
    )
    extra_audiences: tuple[str, ...] = field(
        metadata=declare(
            "str_list",
            [],
            "Further audiences in the same token (honoured in one-shot mode too).",
            name="jwt_extra_audiences",
        )
    )
    file_name: str = field(
        metadata=declare(
            "str",
            "",
            "File under `cert_dir` that receives the compact token (no newline).",
            name="jwt_svid_file_name",
            shown="required",
        )
    )


@dataclass(frozen=True)
class HealthConfig:
    """The ``health_checks`` block plus the bind address and liveness limit."""

    listener_enabled: bool = setting(
        "bool", False, "Serve liveness and readiness over HTTP (daemon mode only)."
    )
    bind_port: int = setting("int", 8081, "Port (0 also means 8081, as in spiffe-helper).")
    liveness_path: str = setting("str", "/live", "Liveness path.")
    readiness_path: str = setting("str", "/ready", "Readiness path.")
    bind_address: str = setting(
        "str",
        "127.0.0.1",
        "Address of the health/metrics server. spiffe-helper listens on all interfaces; use "
        '`"0.0.0.0"` where kubelet must reach the probes.',
        name="health_bind_address",
        ours=True,
        top=True,
    )
    max_disconnected: float = setting(
        "duration",
        600.0,
        "Liveness fails once a Workload API stream has been down (or never up) this long.",
        name="health_max_disconnected",
        ours=True,
        top=True,
    )
    max_stall: float = setting(
        "duration",
        10.0,
        "Liveness fails (and systemd's watchdog is no longer fed) once the event loop is stuck this "
        "long; see *One event loop, and a stalled daemon*.",
        name="health_max_stall",
        ours=True,
        top=True,
    )


@dataclass(frozen=True)
class MetricsConfig:
    """The ``metrics`` block."""

    enabled: bool = setting(
        "bool",
        False,
        "Serve Prometheus metrics on the health server (no extra install: spiffe-bridge renders "
        "them itself). The server runs when either health checks or metrics are enabled.",
        ours=True,
    )
    path: str = setting("str", "/metrics", "Metrics path.", ours=True)


@dataclass(frozen=True)
class BrokerConfig:
    """The ``broker`` block (docs/broker.md): where the Broker API is and how we authenticate."""

    address: str = field(
        metadata=declare(
            "str", "", "Broker endpoint: `unix:///path` or `tcp://IP:port`.", ours=True, shown="required"
        )
    )
    spiffe_id: str = setting(
        "str",
        "",
        "Which of the bridge's own SVIDs (from `agent_address`) authenticates it to the agent; "
        "set this or `hint`.",
        ours=True,
        shown="the default SVID",
    )
    hint: str = setting("str", "", "Or: the hint of that SVID.", ours=True, shown="the default SVID")
    agent_id: str = setting(
        "str",
        "",
        "The SPIFFE ID (or trust domain) the endpoint must present; anything else is refused.",
        ours=True,
        shown="a SPIRE agent of our trust domain",
    )


@dataclass(frozen=True)
class OutputConfig:
    """One ``outputs`` entry: a format written to a directory; ``options`` go to the format."""

    format: str = field(metadata=declare("str", "", "Format name.", ours=True, shown="required"))
    dir: str = field(
        metadata=declare(
            "str", "", "Directory of this output (created if missing).", ours=True, shown="required"
        )
    )
    layout: str = setting(
        "enum",
        "symlink",
        "`symlink`: files live in a versioned directory behind `..data` and switch together with one "
        "rename (the Kubernetes secret-volume pattern, what Envoy's directory watch expects); `flat`: "
        "plain files, each replaced atomically on its own.",
        ours=True,
        choices=("symlink", "flat"),
    )
    uid: int | None = setting(
        "user",
        -1,
        'Owner of the written files, by number or by name (`uid = "postgres"`, looked up on this host; '
        "an unknown name is an error with its line). -1: leave as created.",
        value=None,
        ours=True,
        bounds=ID_BOUNDS,
    )
    gid: int | None = setting(
        "group",
        -1,
        'Group of the written files, by number or by name (`gid = "postgres"`). -1: leave as created.',
        value=None,
        ours=True,
        bounds=ID_BOUNDS,
    )
    options: Mapping[str, Any] = field(default_factory=dict)
    line: int | None = None
    option_lines: Mapping[str, int] = field(default_factory=dict)
    workload_pid_file: str = setting(
        "str",
        "",
        "Broker mode ([broker.md](broker.md)): this output gets the SVID of the process whose PID is in "
        "this file (watched; a new PID is followed), fetched through the `broker` block's endpoint. At "
        "most one workload reference per output; outputs without one keep the bridge's own SVID.",
        ours=True,
    )
    workload_pid: int | None = setting(
        "int",
        0,
        "Broker mode: this output gets the SVID of this process (instead of `workload_pid_file`).",
        value=None,
        ours=True,
        shown="unset",
    )
    jwt_svids: tuple[JwtSvidConfig, ...] = setting(
        "object_list",
        [],
        "Broker mode: the referenced workload's own JWT-SVIDs (`sub` its SPIFFE ID), with the keys of the "
        "top-level `jwt_svids`: minted through the Broker API, written into `dir` (owned by `uid`/`gid`, "
        "mode `jwt_svid_file_mode`) and refreshed at half-life. Only on an output with `workload_pid` or "
        "`workload_pid_file`; a token name that is one of the output's X.509 file names is an error.",
        value=(),
        ours=True,
        fields=keys_of(JwtSvidConfig),
    )

    @property
    def workload(self) -> bool:
        """True when this output carries a referenced workload's SVID (broker mode)."""
        return bool(self.workload_pid_file) or self.workload_pid is not None
