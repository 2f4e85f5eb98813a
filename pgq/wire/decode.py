"""Decode and validate request bodies and query strings into the wire Structs.

A refusal is pgq's 400: ``invalid_json`` for what is not a JSON object, ``invalid_field``
naming the field for the rest (``pgq.wire.explain`` words it). Beyond what the Structs
declare, JSON values (``arguments``, ``result``, ``error``) must hold no NUL character
(jsonb cannot store one) and nest at most ``MAX_JSON_DEPTH`` levels, so any stored value
can be answered back.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from ..errors import InvalidField, InvalidJson
from .explain import Path, explain, field_name, printable
from .limits import MAX_JSON_DEPTH

T = TypeVar("T", bound=msgspec.Struct)

#: 19 digits in a row may be an integer beyond what orjson (the jsonb codec) encodes; found
#: by mapping every digit to "0" and anything else to " " (4× faster than a regex search).
_DIGITS_ONLY = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_NUMBER = b"0" * 19
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
#: A JSON string literal (the body already decoded, so every one is well formed); unrolled
#: so that matching stays linear.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
#: Everything but brackets, once the strings are gone.
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
#: The innermost pairs: one ``sub`` removes exactly one level of nesting (it does not look
#: again at what its own removals join).
_INNERMOST = re.compile(rb"\{\}|\[\]")
_DIGITS = re.compile(r"^[0-9]{1,20}$", re.ASCII)
_NUMBER = re.compile(r"^[0-9]{1,20}(?:\.[0-9]{1,20})?(?:[eE][+-]?[0-9]{1,3})?$", re.ASCII)


@functools.cache
def _decoder(type_: type[T]) -> msgspec.json.Decoder[T]:
    return msgspec.json.Decoder(type_)


def request_body(raw: bytes | bytearray, type_: type[T]) -> T:
    """``raw`` (a JSON object) as a ``type_``; raises ``InvalidJson`` or ``InvalidField``."""
    try:
        body = _decoder(type_).decode(raw)
    except msgspec.ValidationError as exc:
        raise explain(exc, type_, functools.partial(_value_at, raw)) from None
    except msgspec.DecodeError as exc:
        if not raw.strip():
            raise InvalidJson("the request body is empty: send a JSON object") from None
        raise InvalidJson(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidJson("the request body is not valid JSON: it nests too deeply") from None
    # Walking every JSON value costs time; a body with no "\u0000" escape, nesting no
    # deeper than the depth limit and no 19-digit run cannot break a rule, so skip the walk.
    if (
        b"\\u0000" in raw
        or _LONG_NUMBER in raw.translate(_DIGITS_ONLY)
        or _deeper_than(raw, MAX_JSON_DEPTH)
    ):
        for path, value in _json_values(body, []):
            check_json(value, path)
    return body


def _deeper_than(raw: bytes | bytearray, limit: int) -> bool:
    """Whether the JSON document ``raw`` may nest deeper than ``limit`` levels: its
    brackets outside strings, innermost pairs removed one level at a time. A body is at
    least as deep as any value in it, so a batch of many shallow values (where counting
    brackets would say "maybe") is cleared in a few passes, not a walk of every value."""
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return False
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _INNERMOST.sub(b"", brackets)
    return bool(brackets)


def query(params: Iterable[tuple[str, str]], type_: type[T], *, prefix: str = "") -> T:
    """A query string (its (key, value) pairs, repeats included) as a ``type_``.

    Integers are plain digits and numbers plain decimals (no sign, ``nan``, ``inf`` or
    ``0x``): msgspec's own string conversion is laxer than that."""
    fields = {f.encode_name: f.type for f in mi.type_info(type_).fields}  # type: ignore[attr-defined]
    seen: dict[str, str] = {}
    for key, value in params:
        if key not in fields:
            allowed = ", ".join(fields) if fields else "none"
            raise InvalidField(f"{prefix}{printable(key)}", f"unknown; allowed here: {allowed}")
        if key in seen:
            raise InvalidField(f"{prefix}{key}", "given more than once")
        base = fields[key].type if isinstance(fields[key], mi.Metadata) else fields[key]
        if isinstance(base, mi.IntType) and not _DIGITS.match(value):
            raise InvalidField(
                f"{prefix}{key}", f"must be an integer between {base.ge} and {base.le}"
            )
        if isinstance(base, mi.FloatType) and not _NUMBER.match(value):
            raise InvalidField(
                f"{prefix}{key}", f"must be a number between {base.ge:g} and {base.le:g}"
            )
        seen[key] = value
    try:
        return msgspec.convert(seen, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise explain(
            exc, type_, lambda path: seen.get(str(path[0])) if path else None, prefix
        ) from None


def check_json(value: Any, path: Path) -> None:
    """Refuse NUL characters (in strings and keys), nesting deeper than MAX_JSON_DEPTH and
    integers beyond 64 bits (msgspec keeps them exact; orjson, which stores JSON, cannot)."""
    field = field_name(path)
    stack: list[tuple[Any, int, str]] = [(value, 1, field)]
    while stack:
        item, depth, where = stack.pop()
        if type(item) is int:
            if not _INT_MIN <= item <= _INT_MAX:
                raise InvalidField(where, "is an integer beyond 64 bits: send it as a string")
        elif isinstance(item, str):
            if "\x00" in item:
                raise InvalidField(where, "must not contain a NUL character (\\u0000)")
        elif isinstance(item, dict):
            if depth > MAX_JSON_DEPTH:
                raise InvalidField(field, f"nests deeper than {MAX_JSON_DEPTH} levels")
            for k, v in item.items():
                if "\x00" in k:
                    raise InvalidField(where, "has a key with a NUL character (\\u0000)")
                if isinstance(v, dict | list | str | int):
                    stack.append((v, depth + 1, f"{where}.{k}"))
        elif isinstance(item, list):
            if depth > MAX_JSON_DEPTH:
                raise InvalidField(field, f"nests deeper than {MAX_JSON_DEPTH} levels")
            for i, v in enumerate(item):
                if isinstance(v, dict | list | str | int):
                    stack.append((v, depth + 1, f"{where}[{i}]"))


def _json_values(obj: Any, path: Path) -> Iterator[tuple[Path, Any]]:
    """(path, value) of every arbitrary-JSON field in a decoded body, nested Structs included."""
    json_fields = getattr(obj, "json_fields", ())
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        if name in json_fields:
            if value is not msgspec.UNSET:
                yield [*path, name], value
        elif isinstance(value, msgspec.Struct):
            yield from _json_values(value, [*path, name])
        elif isinstance(value, list) and value and isinstance(value[0], msgspec.Struct):
            for i, item in enumerate(value):
                yield from _json_values(item, [*path, name, i])


def _value_at(raw: bytes | bytearray, path: Path) -> Any:
    """The value the client sent at ``path`` (only read again to word a refusal)."""
    try:
        value: Any = msgspec.json.decode(raw)
        for seg in path:
            value = value[seg]
    except (msgspec.DecodeError, RecursionError, LookupError, TypeError):
        return None
    return value
