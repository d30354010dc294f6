"""Reports for ``inspect``: what the agent serves, or found material and verdicts, as dicts and text lines."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping
from typing import Any

from spiffe_bridge.errors import SpiffeBridgeError
from spiffe_bridge.inspect.checks import Finding, check, leaf_id, token_header
from spiffe_bridge.inspect.describe import (
    describe_bundle,
    describe_chain,
    describe_context,
    describe_jwt_bundles,
    describe_jwt_svid,
)
from spiffe_bridge.inspect.detect import OWN, Found, detect_directory
from spiffe_bridge.inspect.sniff import detect_file
from spiffe_bridge.jwtsvid import JwtSvid


def inspect_agent(address: str | None, timeout: float) -> dict[str, Any]:
    """What the Workload API at ``address`` serves: ``{address, svids, bundles, jwt_bundles}``."""
    from spiffe_bridge import WorkloadClient
    from spiffe_bridge.errors import UnimplementedError

    with WorkloadClient(address, timeout=timeout) as client:
        ctx = client.fetch_x509_context(timeout=timeout)
        try:
            jwt_bundles = client.fetch_jwt_bundles(timeout=timeout)
        except UnimplementedError:  # an X.509-only Workload API: nothing to show
            jwt_bundles = None
        endpoint = client.endpoint
    return {"address": endpoint, **describe_context(ctx, jwt_bundles)}


def agent_lines(report: Mapping[str, Any]) -> list[str]:
    """:func:`inspect_agent`'s report as text lines."""
    return [f"Workload API {report['address']}", *material_lines(report)]


def inspect_path(
    path: str, pkcs12_password: str | None = None, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Detect and check everything at ``path``: ``{path, ok, sets: [...]}``."""
    if os.path.isdir(path):
        sets = detect_directory(path, pkcs12_password)
        if not sets:
            missing = Finding("read", False, f"{path}: no files that any spiffe-bridge format writes")
            return {"path": path, "ok": False, "sets": [], "checks": [_finding(missing)]}
    else:
        sets = [detect_file(path, pkcs12_password)]
    reports = [found_report(f, now) for f in sets]
    return {"path": path, "ok": all(r["ok"] for r in reports), "sets": reports, "checks": []}


def found_report(found: Found, now: dt.datetime | None = None) -> dict[str, Any]:
    """One recognised file set: format, files, the ``svids``/``bundles``/``jwt_bundles`` fields, checks."""
    findings = check(found, now)
    own = ""
    svids = []
    if found.chain:
        sid = leaf_id(found.chain[0])
        own = sid.trust_domain.name if sid else ""
        svids.append(describe_chain(found.chain))
    bundles = {(td if td != OWN else own or "(own)"): describe_bundle(c) for td, c in found.bundles.items()}
    out: dict[str, Any] = {
        "format": found.format,
        "files": list(found.paths),
        "ok": all(f.ok for f in findings),
        "svids": svids,
        "bundles": bundles,
        "jwt_bundles": describe_jwt_bundles(found.jwt_bundles),
        "jwt_svids": list(_tokens(found)),
        "checks": [_finding(f) for f in findings],
    }
    if found.env:
        out["env"] = {k: v for k, v in found.env.items() if not k.endswith("TRUST_ANCHORS")}
    if found.secret_names:
        out["secret_names"] = {os.path.basename(p): n for p, n in found.secret_names.items()}
    return out


def _tokens(found: Found) -> Iterator[dict[str, Any]]:
    for path, token in found.tokens:
        try:
            yield {"file": path, **describe_jwt_svid(JwtSvid.parse_insecure(token), token_header(token))}
        except SpiffeBridgeError:
            continue  # the checks report why


def _finding(f: Finding) -> dict[str, Any]:
    return {"check": f.check, "ok": f.ok, "detail": f.detail}


def svid_lines(svid: Mapping[str, Any]) -> list[str]:
    """Text for one ``svids`` entry."""
    hint = f" (hint {svid['hint']!r})" if svid.get("hint") else ""
    lines = [
        f"X.509-SVID {svid['spiffe_id'] or '(no SPIFFE ID)'}{hint}",
        f"  serial {svid['serial']}, key {svid['key_type']} ({svid['key_size']} bits)",
        f"  valid {svid['not_before']} .. {svid['not_after']}",
    ]
    if svid["dns_names"]:
        lines.append(f"  dns names: {', '.join(svid['dns_names'])}")
    lines += [f"  chain[{i}]: {s}" for i, s in enumerate(svid["chain"])]
    return lines


def material_lines(report: Mapping[str, Any]) -> list[str]:
    """Text for the ``svids``, ``bundles`` and ``jwt_bundles`` of a report or an agent description."""
    lines: list[str] = []
    for svid in report.get("svids", []):
        lines += svid_lines(svid)
    for td, authorities in report.get("bundles", {}).items():
        federated = " (federated)" if td in report.get("federated", []) else ""
        lines.append(f"X.509 bundle {td}{federated}: {len(authorities)} authorities")
        lines += [f"  {a['subject']}  {a['not_before']} .. {a['not_after']}" for a in authorities]
    for td, keys in report.get("jwt_bundles", {}).items():
        lines.append(f"JWT bundle {td}: {len(keys)} keys")
        lines += [f"  kid {k['key_id']}: {k['key_type']} ({', '.join(k['algorithms']) or '?'})" for k in keys]
    for token in report.get("jwt_svids", []):
        lines.append(f"JWT-SVID {token['spiffe_id']} in {token['file']}")
        lines.append(f"  audience {', '.join(token['audience'])}; expires {token['expires_at']}")
    return lines


def path_lines(result: Mapping[str, Any]) -> list[str]:
    """Text for one inspected path: each set's material, then a PASS/FAIL line per check."""
    lines = [f"{result['path']}:"]
    for c in result["checks"]:
        lines.append(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}")
    for found in result["sets"]:
        lines.append(f"  format {found['format']} ({len(found['files'])} files)")
        lines += ["    " + line for line in material_lines(found)]
        for name, value in found.get("env", {}).items():
            lines.append(f"    {name}={value}")
        for c in found["checks"]:
            lines.append(f"    {'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}")
    return lines
