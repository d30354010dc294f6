"""Watch events: one plain dict per X.509 context or JWT bundle update, and its one-line text form.

``spiffe-bridge watch`` prints these (JSON, or :func:`event_line`); the fields are
:mod:`.describe`'s, so ``watch`` and ``inspect`` show the same names.
"""

from __future__ import annotations

from typing import Any

from spiffe_bridge.inspect.describe import describe_context, describe_jwt_bundles


def x509_event(ctx: Any) -> dict[str, Any]:
    """A watch event for an X.509 context (``kind: x509`` plus inspect's fields)."""
    doc = describe_context(ctx)
    doc.pop("jwt_bundles")
    return {"kind": "x509", **doc}


def jwt_event(bundles: Any) -> dict[str, Any]:
    """A watch event for a JWT bundle set."""
    return {"kind": "jwt_bundles", "jwt_bundles": describe_jwt_bundles(bundles)}


def event_line(event: dict[str, Any]) -> str:
    """One human line for a watch event."""
    if event["kind"] == "x509":
        svids = "; ".join(
            f"{s['spiffe_id']}{' hint ' + repr(s['hint']) if s['hint'] else ''} serial {s['serial']}"
            f" until {s['not_after']}"
            for s in event["svids"]
        )
        bundles = ", ".join(f"{td}({len(a)})" for td, a in event["bundles"].items())
        return f"{event['time']} x509 {svids} | bundles {bundles}"
    keys = ", ".join(f"{td}[{','.join(k['key_id'] for k in ks)}]" for td, ks in event["jwt_bundles"].items())
    return f"{event['time']} jwt_bundles {keys or '-'}"
