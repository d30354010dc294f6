"""From configuration to "which files go into which directory": one plan per output directory.

spiffe-helper's keys describe one directory (``cert_dir``) holding the PEM
files and the JWT files; every ``outputs`` entry adds a format in a directory.
Entries that share a directory are merged into one plan, because a
:class:`~spiffe_bridge.fileset.FileSetWriter` owns its directory and always
writes the complete set. Rendering is pure: material in, ``FileSpec`` list out.
X.509 files are re-rendered only when the X.509 context changes (PKCS#12 with
a password differs on every render, and a JWT refresh must not look like an
X.509 rotation).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spiffe_bridge.fileset import FileSetWriter, FileSpec, Layout
from spiffe_bridge.fileset.names import names_clash
from spiffe_bridge.formats import (
    X509_FORMATS,
    JwtOptions,
    X509Options,
    format_options,
    formats_taking,
    render_jwt,
    render_x509,
)
from spiffe_bridge.formats.options import FormatError
from spiffe_bridge.jwtbundle import JwtBundleSet
from spiffe_bridge.jwtsvid import JwtSvid
from spiffe_bridge.sidecar import hot_updates
from spiffe_bridge.sidecar.config import Config, JwtSvidConfig, OutputConfig
from spiffe_bridge.sidecar.schema import ConfigError, Issues, Key, parse_mode, where
from spiffe_bridge.x509context import X509Context

#: X509Options fields that are never set from a config file.
_NOT_CONFIGURABLE = {"now", "pkcs12_password", "pkcs12_truststore_password"}
#: Per-output keys of the pkcs12 format handled here rather than passed to X509Options.
PASSWORD_KEYS = tuple(
    Key(name, "str", "", f"Per-output `{name}` (format `pkcs12`).", ours=True, shown="the top-level value")
    for name in ("pkcs12_password_file", "pkcs12_password_env")
)
_PASSWORD_KEYS = {key.name for key in PASSWORD_KEYS}
_OPTION_FIELDS = {f.name: f for f in dataclasses.fields(X509Options) if f.name not in _NOT_CONFIGURABLE}


@dataclass(frozen=True)
class X509Output:
    """One X.509 format with its options."""

    format: str
    options: X509Options


@dataclass
class DirPlan:
    """Everything written into one directory, and how."""

    directory: str
    layout: str
    uid: int | None = None
    gid: int | None = None
    x509: list[X509Output] = field(default_factory=list)
    jwt_svids: list[JwtSvidConfig] = field(default_factory=list)
    jwt_options: JwtOptions | None = None
    #: servers told to take the new files after each changed write (reload_haproxy, ...)
    updates: list[hot_updates.HotUpdate] = field(default_factory=list)
    #: Broker mode: the ``outputs`` index whose referenced workload's context this plan renders.
    workload: int | None = None
    _cache: dict[int, tuple[bytes, list[FileSpec]]] = field(default_factory=dict, repr=False)

    def writer(self) -> FileSetWriter:
        """The writer that owns this directory."""
        layout: Layout = "flat" if self.layout == "flat" else "symlink"
        return FileSetWriter(self.directory, layout=layout, uid=self.uid, gid=self.gid)

    @property
    def wants_jwt_bundle(self) -> bool:
        """True when this directory receives a JWT bundle file."""
        return self.jwt_options is not None and bool(self.jwt_options.jwt_bundle_file_name)

    def render(
        self,
        ctx: X509Context | None,
        tokens: Mapping[str, JwtSvid],
        bundles: JwtBundleSet | None,
    ) -> list[FileSpec]:
        """The files for whatever material is available (FormatError if the options cannot be met).

        Outputs sharing the directory may render the same file identically (``svid_bundle.pem``);
        the same name with other content is a FormatError naming both outputs.
        """
        rendered: list[tuple[str, list[FileSpec]]] = []
        if ctx is not None:
            for i, out in enumerate(self.x509):
                cached = self._cache.get(i)
                if cached is None or cached[0] != ctx.digest:
                    cached = (ctx.digest, render_x509(out.format, ctx, out.options))
                    self._cache[i] = cached
                rendered.append((f"format {out.format!r}", cached[1]))
        if self.jwt_options is not None:
            pairs = [(tokens[j.file_name], j.file_name) for j in self.jwt_svids if j.file_name in tokens]
            if pairs or (bundles is not None and self.wants_jwt_bundle):
                jwt_files = render_jwt(pairs, bundles if self.wants_jwt_bundle else None, self.jwt_options)
                rendered.append(("the JWT files", jwt_files))
        if len(rendered) > 1:
            self._check_collisions(rendered)
        return [spec for _, specs in rendered for spec in specs]

    def _check_collisions(self, rendered: Sequence[tuple[str, Sequence[FileSpec]]]) -> None:
        owners: dict[str, tuple[str, FileSpec]] = {}
        for what, specs in rendered:
            for spec in specs:
                seen = owners.setdefault(spec.name, (what, spec))
                if seen[0] != what and seen[1] != spec:
                    raise FormatError(
                        f"{seen[0]} and {what} both write {spec.name!r} in {self.directory}, with "
                        "different content; rename one (its *_file_name option) or use two directories"
                    )


def _abs(directory: str) -> str:
    return os.path.abspath(directory or ".")


def _check_names(names: Sequence[str], what: str) -> None:
    for name in names:
        try:
            FileSpec(name, b"")
        except ValueError as exc:
            raise ConfigError(f"{what}: {exc}") from None


def legacy_plan(config: Config) -> DirPlan | None:
    """The directory plan of spiffe-helper's own keys (``cert_dir``), if any are set."""
    if not (config.x509_enabled or config.jwt_enabled):
        return None
    plan = DirPlan(_abs(config.cert_dir), config.layout)
    if config.x509_enabled:
        names = [config.svid_file_name, config.svid_key_file_name, config.svid_bundle_file_name]
        _check_names(names, "X.509 file names")
        plan.x509.append(
            X509Output(
                "pem",
                X509Options(
                    hint=config.hint or None,
                    svid_file_name=config.svid_file_name,
                    svid_key_file_name=config.svid_key_file_name,
                    svid_bundle_file_name=config.svid_bundle_file_name,
                    cert_file_mode=config.cert_file_mode,
                    key_file_mode=config.key_file_mode,
                    allow_shared_key_file_mode=config.allow_shared_key_file_mode,
                    add_intermediates_to_bundle=config.add_intermediates_to_bundle,
                    include_federated_domains=config.include_federated_domains,
                    omit_expired=config.omit_expired,
                    federated_layout="merged" if config.federated_layout == "merged" else "per-trust-domain",
                ),
            )
        )
    if config.jwt_enabled:
        _check_names([j.file_name for j in config.jwt_svids], "'jwt_svids' file names")
        if config.jwt_bundle_file_name:
            _check_names([config.jwt_bundle_file_name], "'jwt_bundle_file_name'")
        plan.jwt_svids = list(config.jwt_svids)
        plan.jwt_options = JwtOptions(
            jwt_svid_file_mode=config.jwt_svid_file_mode,
            jwt_bundle_file_name=config.jwt_bundle_file_name or None,
            jwt_bundle_file_mode=config.jwt_bundle_file_mode,
            jwks_dir=None,
        )
    return plan


def read_password(file_name: str, env_name: str, environ: Mapping[str, str]) -> str | None:
    """The PKCS#12 password (``formats.pkcs12.read_password``); an unreadable file is a ConfigError."""
    from spiffe_bridge.formats import pkcs12

    try:
        return pkcs12.read_password(file_name, env_name, environ)
    except OSError as exc:
        raise ConfigError(f"'pkcs12_password_file' {file_name!r} cannot be read: {exc.strerror}") from None


def _option_value(name: str, value: Any, out: OutputConfig, issues: Issues) -> Any:
    line = out.option_lines.get(name, out.line)
    label = f"outputs entry {out.format!r}: {name}"
    default: Any = _OPTION_FIELDS[name].default
    if isinstance(default, bool):  # before modes: allow_shared_key_file_mode is a flag
        if not isinstance(value, bool):
            raise ConfigError(f"{where(label, line)} must be true or false, got {value!r}")
        return value
    if name.endswith("_mode"):
        return parse_mode(value, label, line, int(default), issues)
    if name == "federated_layout":
        if value not in ("merged", "per-trust-domain"):
            raise ConfigError(f"{where(label, line)} must be merged or per-trust-domain, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{where(label, line)} must be a string, got {value!r}")
    if name.endswith("_file_name"):
        _check_names([value], where(label, line))
    elif name.endswith("_dir"):
        _check_names([f"{value}/x"], where(label, line))
    return value


def _unknown_option(name: str, out: OutputConfig) -> None:
    """ConfigError for an option ``out``'s format does not read, naming the formats that do."""
    line = out.option_lines.get(name, out.line)
    owners = ("pkcs12",) if name in _PASSWORD_KEYS else formats_taking(name) if name in _OPTION_FIELDS else ()
    hint = f"; it is an option of {', '.join(owners)}" if owners else ""
    raise ConfigError(f"unknown key {where(name, line)} in an 'outputs' entry ({out.format}){hint}")


def output_plan(out: OutputConfig, config: Config, environ: Mapping[str, str], issues: Issues) -> DirPlan:
    """The plan of one ``outputs`` entry (X509Options built and checked now)."""
    if out.format not in X509_FORMATS:
        raise ConfigError(
            f"{where('format', out.line)}: unknown output format {out.format!r}; "
            f"choose one of {', '.join(X509_FORMATS)}"
        )
    # the top-level hint picks among the bridge's own SVIDs; a workload's are its own (broker mode)
    kwargs: dict[str, Any] = {"hint": None if out.workload else (config.hint or None)}
    taken = format_options(out.format) | (_PASSWORD_KEYS if out.format == "pkcs12" else set())
    for name, value in out.options.items():
        if name in hot_updates.KEYS:
            continue
        if name not in taken:
            _unknown_option(name, out)
        if name not in _PASSWORD_KEYS:
            kwargs[name] = _option_value(name, value, out, issues)
    if out.format == "pkcs12":
        password = read_password(
            str(out.options.get("pkcs12_password_file", config.pkcs12_password_file)),
            str(out.options.get("pkcs12_password_env", config.pkcs12_password_env)),
            environ,
        )
        kwargs["pkcs12_password"] = password
    if out.format == "linkerd":
        kwargs.setdefault("linkerd_workload_api_address", config.agent_address)
    kwargs.setdefault("allow_shared_key_file_mode", config.allow_shared_key_file_mode)
    try:
        options = X509Options(**kwargs)
    except FormatError as exc:  # the key_file_mode rule (check_key_file_mode)
        line = out.option_lines.get("key_file_mode", out.line)
        raise ConfigError(f"{where('outputs entry ' + repr(out.format), line)}: {exc}") from None
    directory = _abs(out.dir)
    updates = hot_updates.from_output(out.format, directory, out.options, options, out.option_lines, out.line)
    if updates and not config.daemon_mode:  # one-shot mode writes once and runs no action
        for action in dict.fromkeys(u.action for u in updates):
            line = out.option_lines.get(action, out.line)
            issues.warn(f"{where(action, line)} is ignored because daemon_mode is false")
    plan = DirPlan(
        directory, out.layout, out.uid, out.gid, [X509Output(out.format, options)], updates=updates
    )
    if out.jwt_svids:  # broker mode: the referenced workload's tokens (config.py allows no others here)
        line = out.option_lines.get("jwt_svids", out.line)
        _check_token_names(plan.x509, out.jwt_svids, f"outputs entry {out.format!r}", line)
        plan.jwt_svids = list(out.jwt_svids)
        plan.jwt_options = JwtOptions(
            jwt_svid_file_mode=config.jwt_svid_file_mode, jwt_bundle_file_name=None, jwks_dir=None
        )
    return plan


def _x509_names(x509: Sequence[X509Output]) -> list[tuple[str, str]]:
    """(option, file or directory name) of everything the X.509 formats of a plan write."""
    names = []
    for out in x509:
        for option in sorted(format_options(out.format)):
            value = getattr(out.options, option, None) if option.endswith(("_file_name", "_dir")) else None
            if isinstance(value, str) and value:
                names.append((option, value))
    return names


def _check_token_names(
    x509: Sequence[X509Output], specs: Sequence[JwtSvidConfig], label: str, line: int | None
) -> None:
    """Each token file needs a name of its own in its directory, apart from the X.509 files."""
    seen = _x509_names(x509)
    for i, spec in enumerate(specs):
        key = f"{label}: {where(f'jwt_svids[{i}].jwt_svid_file_name', line)}"
        _check_names([spec.file_name], key)
        name = spec.file_name
        for other_key, other in seen:
            if names_clash(name, other):
                raise ConfigError(f"{key}: {name!r} collides with {other_key} {other!r}")
        seen.append((key, name))


def _workload_key(config: Config, index: int | None) -> tuple[str, int | None] | None:
    if index is None:
        return None
    out = config.outputs[index]
    return (out.workload_pid_file, out.workload_pid)


def build(config: Config, environ: Mapping[str, str] | None = None) -> tuple[list[DirPlan], list[str]]:
    """All directory plans (merged by directory) and extra warnings; ConfigError on conflicts."""
    env = os.environ if environ is None else environ
    issues = Issues()
    plans: dict[str, DirPlan] = {}
    legacy = legacy_plan(config)
    candidates = [legacy] if legacy else []
    for index, out in enumerate(config.outputs):
        candidates.append(output_plan(out, config, env, issues))
        candidates[-1].workload = index if out.workload else None
    for plan in candidates:
        existing = plans.get(plan.directory)
        if existing is None:
            plans[plan.directory] = plan
            continue
        if _workload_key(config, existing.workload) != _workload_key(config, plan.workload):
            raise ConfigError(
                f"two outputs write to {plan.directory} for different workloads; "
                "each workload's files need a directory of their own"
            )
        if (existing.layout, existing.uid, existing.gid) != (plan.layout, plan.uid, plan.gid):
            raise ConfigError(
                f"two outputs write to {plan.directory} with a different layout or owner; "
                "use one layout/uid/gid per directory"
            )
        existing.x509 += plan.x509
        existing.updates += plan.updates
        if plan.jwt_svids:  # two outputs of one workload in one directory: its tokens join the set
            existing.jwt_svids += plan.jwt_svids
            existing.jwt_options = plan.jwt_options
        if existing.jwt_svids and existing.workload is not None:
            _check_token_names(existing.x509, existing.jwt_svids, f"outputs in {plan.directory}", None)
    return list(plans.values()), issues.warnings
