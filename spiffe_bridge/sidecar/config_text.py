"""Configuration text to one HCL object with key lines, whatever the format (HCL, TOML or JSON).

spiffe-helper reads HCL; TOML and JSON are decoded with the standard library and
get the same :class:`~spiffe_bridge.sidecar.hcl.HclObject` shape, with lines where
they can be found, so every later error can name the key and its line.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

from spiffe_bridge.sidecar.hcl import MAX_NESTING, HclError, HclObject, check_nesting, loads
from spiffe_bridge.sidecar.schema import ConfigError


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
