"""Environment variables that override configuration keys.

Every scalar key ``k`` can be set with ``SPIFFE_BRIDGE_<K>`` (upper case) and a
key ``s`` of a block ``b`` with ``SPIFFE_BRIDGE_<B>_<S>``: e.g.
``SPIFFE_BRIDGE_CERT_DIR``, ``SPIFFE_BRIDGE_DAEMON_MODE=false``,
``SPIFFE_BRIDGE_HEALTH_CHECKS_BIND_PORT=9000``. Values are read as the key's
type (booleans ``true/false/1/0/yes/no``; modes as octal strings; durations
like ``30s``; argv lists as a JSON array or shell words).

JWT audiences (spiffe-helper#199: set them from the Downward API):
``SPIFFE_BRIDGE_JWT_AUDIENCE``, ``SPIFFE_BRIDGE_JWT_EXTRA_AUDIENCES``
(comma-separated) and ``SPIFFE_BRIDGE_JWT_SVID_FILE_NAME`` change the one
``jwt_svids`` entry, or create it when the file has none.

An override set to an empty (or blank) value is an error rather than "use the
default": ``SPIFFE_BRIDGE_CERT_DIR=`` from an unset template variable would
otherwise write the private key into the current directory.

``SPIFFE_ENDPOINT_SOCKET`` is not an override: as in spiffe-helper it is used
only when ``agent_address`` is unset (see ``config._resolve_address``).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator, Mapping
from typing import Any

from spiffe_bridge.sidecar.hcl import HclError, parse_number
from spiffe_bridge.sidecar.schema import ConfigError, Issues, Key, coerce
from spiffe_bridge.sidecar.settings import TOP_KEYS

PREFIX = "SPIFFE_BRIDGE_"
JWT_AUDIENCE = PREFIX + "JWT_AUDIENCE"
JWT_EXTRA_AUDIENCES = PREFIX + "JWT_EXTRA_AUDIENCES"
JWT_SVID_FILE_NAME = PREFIX + "JWT_SVID_FILE_NAME"
DEFAULT_JWT_FILE = "jwt_svid.token"

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def variables() -> Iterator[tuple[str, tuple[str, ...], Key]]:
    """Every override variable: (name, key path, key)."""
    for key in TOP_KEYS:
        if not key.env:
            continue
        if key.kind == "object":
            for sub in key.fields:
                yield f"{PREFIX}{key.name.upper()}_{sub.name.upper()}", (key.name, sub.name), sub
        else:
            yield f"{PREFIX}{key.name.upper()}", (key.name,), key


def _from_text(key: Key, name: str, text: str, issues: Issues) -> Any:
    if not text.strip():
        raise ConfigError(f"environment {name} is set but empty; unset it to keep the file's {key.name!r}")
    value: Any = text
    if key.kind == "bool":
        low = text.strip().lower()
        if low not in _TRUE | _FALSE:
            raise ConfigError(f"environment {name}={text!r} must be true or false")
        value = low in _TRUE
    elif key.kind == "int":
        try:
            value = parse_number(text.strip(), 0)
        except (HclError, ValueError):
            raise ConfigError(f"environment {name}={text!r} must be an integer") from None
    elif key.kind == "str_list":
        stripped = text.strip()
        try:
            value = json.loads(stripped) if stripped.startswith("[") else shlex.split(stripped)
        except ValueError as exc:
            raise ConfigError(f"environment {name} is not a JSON array or shell words: {exc}") from None
    try:
        return coerce(key, value, None, issues, f"{key.name} (from {name})")
    except ConfigError as exc:
        raise ConfigError(f"environment {name}: {exc}") from None


def apply(values: dict[str, Any], env: Mapping[str, str], issues: Issues) -> None:
    """Apply overrides from ``env`` onto the coerced configuration ``values`` (in place)."""
    for name, path, key in variables():
        if name not in env:
            continue
        target = values
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = _from_text(key, name, env[name], issues)
    _apply_jwt(values, env)


def _apply_jwt(values: dict[str, Any], env: Mapping[str, str]) -> None:
    audience = env.get(JWT_AUDIENCE)
    extra = env.get(JWT_EXTRA_AUDIENCES)
    file_name = env.get(JWT_SVID_FILE_NAME)
    if audience is None and extra is None and file_name is None:
        return
    entries: list[dict[str, Any]] = values["jwt_svids"]
    if len(entries) > 1:
        raise ConfigError(
            f"{JWT_AUDIENCE}/{JWT_EXTRA_AUDIENCES}/{JWT_SVID_FILE_NAME} apply to a single 'jwt_svids' "
            f"entry, but the file has {len(entries)}"
        )
    if not entries:
        if not audience:
            raise ConfigError(f"{JWT_AUDIENCE} is required to add a JWT-SVID from the environment")
        entries.append({"jwt_audience": audience, "jwt_svid_file_name": file_name or DEFAULT_JWT_FILE})
    entry = entries[0]
    if audience is not None:
        entry["jwt_audience"] = audience
    if file_name is not None:
        entry["jwt_svid_file_name"] = file_name
    if extra is not None:
        entry["jwt_extra_audiences"] = [a.strip() for a in extra.split(",") if a.strip()]
