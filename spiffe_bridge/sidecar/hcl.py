"""A small HCL (v1) reader for spiffe-helper configuration files, keeping line numbers.

spiffe-helper decodes its ``helper.conf`` with hashicorp/hcl v1. This reader
covers what such files use: ``key = value`` pairs, strings, integers (with Go's
base detection, so ``0644`` is octal), floats, booleans, lists, object literals
(``{a = 1, b = 2}``), blocks (``health_checks { ... }``), repeated blocks (which
HCL turns into a list) and ``#``, ``//`` and ``/* */`` comments. Every object
remembers the line of each key so configuration errors can point at it.
Anything else is a :class:`HclError` naming the line and what was expected.
Integers must fit Go's int64 and floats must be finite (hcl v1 reports a range
error too), and values nest at most ``MAX_NESTING`` deep, so a hostile file
cannot exhaust the stack.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from spiffe_bridge.errors import HclError as HclError  # defined with the other errors; importable here


class HclObject(dict[str, Any]):
    """A decoded object: a dict that also knows the line of itself and of each key."""

    def __init__(self, line: int = 1) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}

    def line_of(self, key: str) -> int:
        """The line where ``key`` was set (the object's own line if unknown)."""
        return self.key_lines.get(key, self.line)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # ident, string, number, bool, punct, eof
    value: Any
    line: int
    text: str


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r]+)
  | (?P<nl>\n)
  | (?P<comment>\#[^\n]*|//[^\n]*)
  | (?P<block>/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.\-]*)
  | (?P<punct>[=\[\]{},:])
    """,
    re.VERBOSE | re.DOTALL,
)

#: Deepest nesting of lists and objects any configuration format may use (real files need 3).
MAX_NESTING = 32
_INT64 = 2**63
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "/": "/"}


def _unquote(text: str, line: int) -> str:
    out: list[str] = []
    i = 1
    end = len(text) - 1
    while i < end:
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
        else:
            raise HclError(f"unknown escape sequence \\{nxt} in string", line)
    return "".join(out)


def parse_number(text: str, line: int) -> int | float:
    """Go's strconv.ParseInt(text, 0, 64) for integers (0x hex, 0o or leading-0 octal), finite floats."""
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("-")
    if any(c in body for c in ".eE") and not body.lower().startswith("0x"):
        number = float(text)
        if not math.isfinite(number):
            raise HclError(f"number {text[:40]!r} is out of range", line)
        return number
    if len(body) > 66:  # longer than any int64 in any base: refuse before converting
        raise HclError(f"integer {text[:40]!r}... is out of range (64 bits)", line)
    value = _parse_int(body, text, line) * sign
    if not -_INT64 <= value < _INT64:
        raise HclError(f"integer {text!r} is out of range (64 bits)", line)
    return value


def _parse_int(body: str, text: str, line: int) -> int:
    lowered = body.lower()
    if lowered.startswith("0x"):
        return int(body[2:], 16)
    if lowered.startswith("0o"):
        return int(body[2:], 8)
    if len(body) > 1 and body.startswith("0"):
        if not re.fullmatch(r"[0-7]+", body):
            raise HclError(f"invalid octal number {text!r}", line)
        return int(body, 8)
    return int(body, 10)


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    line = 1
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            if text.startswith("/*", pos):
                raise HclError("unterminated /* comment", line)
            if text[pos] == '"':
                raise HclError("unterminated string", line)
            if text.startswith("<<", pos):
                raise HclError("heredoc strings are not supported; use a quoted string", line)
            raise HclError(f"unexpected character {text[pos]!r}", line)
        kind = m.lastgroup or ""
        raw = m.group()
        if kind == "string":
            tokens.append(_Tok("string", _unquote(raw, line), line, raw))
        elif kind == "number":
            tokens.append(_Tok("number", parse_number(raw, line), line, raw))
        elif kind == "ident":
            if raw in ("true", "false"):
                tokens.append(_Tok("bool", raw == "true", line, raw))
            else:
                tokens.append(_Tok("ident", raw, line, raw))
        elif kind == "punct":
            tokens.append(_Tok("punct", raw, line, raw))
        line += raw.count("\n")
        pos = m.end()
    tokens.append(_Tok("eof", None, line, "end of file"))
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def enter(self, line: int) -> None:
        """One level deeper (an object or list opens); refuse beyond ``MAX_NESTING``."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise HclError(f"values are nested more than {MAX_NESTING} levels deep", line)

    def peek(self) -> _Tok:
        return self.tokens[self.pos]

    def take(self) -> _Tok:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def is_punct(self, value: str) -> bool:
        tok = self.peek()
        return tok.kind == "punct" and tok.value == value

    def expect_punct(self, value: str, what: str) -> _Tok:
        tok = self.take()
        if tok.kind != "punct" or tok.value != value:
            raise HclError(f"expected {value!r} {what}, found {tok.text!r}", tok.line)
        return tok

    def body(self, obj: HclObject, closing: str | None) -> HclObject:
        """Items until ``closing`` (or end of file); commas between items are optional."""
        while True:
            tok = self.peek()
            if closing is None and tok.kind == "eof":
                return obj
            if closing is not None and self.is_punct(closing):
                self.take()
                return obj
            if tok.kind == "eof":
                raise HclError(f"missing {closing!r} for the object opened on line {obj.line}", tok.line)
            self.item(obj)
            if self.is_punct(","):
                self.take()

    def item(self, obj: HclObject) -> None:
        tok = self.take()
        if tok.kind not in ("ident", "string"):
            raise HclError(f"expected a key, found {tok.text!r}", tok.line)
        key: str = tok.value
        if self.is_punct("=") or self.is_punct(":"):
            self.take()
            value = self.value()
        elif self.is_punct("{"):
            brace = self.take()
            value = self.nested_body(brace.line)
        else:
            nxt = self.peek()
            raise HclError(f"expected '=' or '{{' after key {key!r}, found {nxt.text!r}", nxt.line)
        self.assign(obj, key, value, tok.line)

    def nested_body(self, line: int) -> HclObject:
        self.enter(line)
        obj = self.body(HclObject(line), "}")
        self.depth -= 1
        return obj

    @staticmethod
    def assign(obj: HclObject, key: str, value: Any, line: int) -> None:
        if key not in obj:
            obj[key] = value
            obj.key_lines[key] = line
            return
        old = obj[key]
        # HCL v1: repeating a block (or object) under one key builds a list of objects.
        if isinstance(value, HclObject) and isinstance(old, HclObject):
            obj[key] = [old, value]
        elif (
            isinstance(value, HclObject)
            and isinstance(old, list)
            and all(isinstance(o, HclObject) for o in old)
        ):
            old.append(value)
        elif isinstance(value, list) and isinstance(old, list):
            old.extend(value)
        else:
            raise HclError(f"key {key!r} is set twice (first on line {obj.line_of(key)})", line)

    def value(self) -> Any:
        tok = self.take()
        if tok.kind in ("string", "number", "bool"):
            return tok.value
        if tok.kind == "punct" and tok.value == "[":
            self.enter(tok.line)
            items = self.list_value(tok.line)
            self.depth -= 1
            return items
        if tok.kind == "punct" and tok.value == "{":
            return self.nested_body(tok.line)
        raise HclError(f"expected a value, found {tok.text!r}", tok.line)

    def list_value(self, line: int) -> list[Any]:
        items: list[Any] = []
        while True:
            if self.peek().kind == "eof":
                raise HclError(f"missing ']' for the list opened on line {line}", self.peek().line)
            if self.is_punct("]"):
                self.take()
                return items
            items.append(self.value())
            if self.is_punct(","):
                self.take()
            elif not self.is_punct("]"):
                tok = self.peek()
                if tok.kind == "eof":
                    raise HclError(f"missing ']' for the list opened on line {line}", tok.line)
                raise HclError(f"expected ',' or ']' in list, found {tok.text!r}", tok.line)


def check_nesting(text: str) -> None:
    """Refuse JSON or TOML text whose brackets nest deeper than ``MAX_NESTING``, naming the line.

    The decoders recurse per level, so a hostile file could otherwise end in a RecursionError;
    brackets inside strings (``"..."``, ``'...'``, triple-quoted) and ``#`` comments are skipped.
    """
    depth, line, i, n = 0, 1, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                raise HclError(f"values are nested more than {MAX_NESTING} levels deep", line)
        elif ch in "]}":
            depth -= 1
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif ch in "\"'":
            quote = ch * 3 if text.startswith(ch * 3, i) else ch
            j = i + len(quote)
            while j < n and not text.startswith(quote, j):
                j += 2 if text[j] == "\\" and ch == '"' else 1
            line += text.count("\n", i, j)
            i = j + len(quote)
            continue
        i += 1


def loads(text: str) -> HclObject:
    """Parse HCL text into an :class:`HclObject` (raises :class:`HclError`)."""
    return _Parser(_tokenize(text)).body(HclObject(1), None)
