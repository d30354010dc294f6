"""The type of a configuration key, its declaration on a dataclass field, and the coercion of raw values.

Every key is declared once, as the field of the dataclass that holds its value
(:mod:`spiffe_bridge.sidecar.settings`): :func:`setting` attaches a :class:`Key`
(type, default, meaning) to the field and :func:`keys_of` reads the tables back.
The loader checks files against those tables (unknown keys are errors that name
the line), environment overrides and the docs table are derived from them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spiffe_bridge import duration, filemode
from spiffe_bridge.errors import ConfigError as ConfigError  # defined with the other errors; importable here
from spiffe_bridge.sidecar.hcl import HclObject


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, default and a one-line meaning."""

    name: str
    kind: str  # str, bool, int, user, group, number, mode, duration, str_list, enum, object, object_list
    default: Any
    help: str  # the meaning, as docs/sidecar.md's key table shows it
    ours: bool = False
    choices: tuple[str, ...] = ()
    fields: tuple[Key, ...] = ()
    env: bool = True  # may be overridden by an environment variable
    open: bool = False  # object(s) may carry further keys, checked by the consumer
    bounds: tuple[int, int] = (-(2**63), 2**63 - 1)  # int keys: inclusive range (default: Go's int64)
    shown: str = ""  # the docs' default column when the default alone does not say it ("required", ...)

    def sub(self, name: str) -> Key | None:
        """The nested key ``name`` of an object key, or None."""
        return next((k for k in self.fields if k.name == name), None)


#: uid_t/gid_t are 32-bit and (uid_t)-1 means "no change", so -1 .. 2**32-2 are the usable ids.
ID_BOUNDS = (-1, 2**32 - 2)
_SAME: Any = object()


def declare(kind: str, default: Any, help: str, *, top: bool = False, **options: Any) -> dict[str, Any]:
    """Field metadata declaring a key (named after the field unless ``name=``); ``top``: see keys_of."""
    name = options.pop("name", "")
    return {"key": Key(name, kind, default, help, **options), "top": top}


def setting(kind: str, default: Any, help: str, *, value: Any = _SAME, **options: Any) -> Any:
    """A dataclass field declaring its key; the field defaults to ``value`` (else the key's default)."""
    metadata = declare(kind, default, help, **options)
    initial = default if value is _SAME else value
    if isinstance(initial, list | dict):
        return field(default_factory=lambda: type(initial)(initial), metadata=metadata)
    return field(default=initial, metadata=metadata)


def declared(cls: type, *, top: bool = False) -> list[tuple[str, Key]]:
    """``(field name, key)`` of every field of ``cls`` that declares a key.

    ``top`` selects the fields of a block's dataclass whose keys are written at the
    top level (``health_bind_address`` lives in HealthConfig but beside ``health_checks``).
    """
    out = []
    for f in dataclasses.fields(cls):
        key: Key | None = f.metadata.get("key")
        if key is not None and f.metadata["top"] == top:
            out.append((f.name, key if key.name else dataclasses.replace(key, name=f.name)))
    return out


def keys_of(cls: type, *, top: bool = False) -> tuple[Key, ...]:
    """The key table ``cls``'s fields declare (see :func:`declared`)."""
    return tuple(key for _, key in declared(cls, top=top))


#: Blanks between a number and its unit (``"30 s"``), which config files have always accepted.
_UNIT_GAP = re.compile(r"(?<=[\d.])\s+(?=[a-z])")
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
    """Seconds from a number, or a string as every command-line option takes it (``500ms``, ``1h30m``)."""
    if isinstance(value, bool):
        raise ConfigError(f"{where(name, line)} must be a duration like 30s, got {value!r}")
    if isinstance(value, int):
        seconds = float(value) if abs(value) <= MAX_DURATION else math.copysign(math.inf, value)
    elif isinstance(value, float):
        seconds = value
    elif isinstance(value, str):
        try:
            seconds = duration.parse_duration(_UNIT_GAP.sub("", value.strip()))
        except ValueError:
            raise ConfigError(
                f"{where(name, line)} must be a duration like 30s, 5m or 500ms, got {value!r}"
            ) from None
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
        try:
            return filemode.parse_mode(value.strip().lower().removeprefix("0o")) or default
        except ValueError:
            raise ConfigError(
                f'{where(name, line)} must be an octal mode like "0644", got {value!r}'
            ) from None
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
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where(name, line)} must be a number, got {value!r}")
        return float(value)
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
