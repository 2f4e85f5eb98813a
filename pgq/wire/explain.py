"""Turn msgspec's validation errors into pgq's wording: a 400 whose message names the field.

msgspec says ``Expected `int` <= 32767 - at `$.jobs[3].priority```; pgq answers
``jobs[3].priority: must be an integer between -32768 and 32767``. The field's declared
type (``msgspec.inspect``) supplies the whole range, the list of known fields and the
wording of a name rule; the value sent (read again from the body, on this error path
only) is quoted where it helps.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
import msgspec.inspect as mi

from ..errors import InvalidArgument, InvalidField, InvalidJson

_MESSAGE = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_QUOTED = re.compile(r"`([^`]*)`")

#: msgspec's names of JSON types → how pgq's messages say them.
_JSON_TYPES = {
    "null": "null",
    "bool": "a boolean",
    "int": "a number",
    "float": "a number",
    "str": "a string",
    "array": "an array",
    "object": "an object",
}

Path = list[str | int]
Lookup = Callable[[Path], Any]

_NOT_FOUND = object()


def explain(
    exc: msgspec.ValidationError, root: type, value_at: Lookup, prefix: str = ""
) -> InvalidArgument:
    """The pgq refusal for ``exc``, raised while decoding ``root``.

    ``value_at(path)`` gives the JSON value the client sent at ``path`` (or any sentinel
    when there is none); ``prefix`` is put before field names (``query parameter ``).
    """
    m = _MESSAGE.match(str(exc))
    assert m is not None  # the pattern matches any text
    what, path = m["what"], _parse_path(m["path"] or "")
    field_type = _type_at(mi.type_info(root), path)

    def refuse(problem: str, at: Path = path) -> InvalidField:
        return InvalidField(prefix + (field_name(at) or "body"), problem)

    if what.startswith("Object missing required field"):
        name = _quoted(what)
        problem = "is required"
        if isinstance(_field_type(field_type, name), mi.BoolType):
            problem += " (true or false)"
        return refuse(problem, [*path, name])
    if what.startswith("Object contains unknown field"):
        known = ", ".join(f.encode_name for f in _struct(field_type).fields)
        return refuse(f"unknown field; known fields are {known}", [*path, printable(_quoted(what))])
    if what == "Number out of range":
        # A number no double can hold (1e400) is not JSON pgq can store anywhere.
        return InvalidJson(
            f"the request body is not valid JSON: {field_name(path)} is out of range"
        )

    expected = re.match(r"Expected `([^`]*)`, got `([^`]*)`$", what)
    if expected is not None:
        want, got = expected.groups()
        if not path and want == "object":
            return InvalidJson(f"the request body must be a JSON object, not {_JSON_TYPES[got]}")
        if got == "null":
            return refuse("must not be null (leave the field out to use its default)")
        return refuse(f"must be {_kind(want, field_type)}, not {_JSON_TYPES.get(got, got)}")

    base, meta = _unwrap(field_type)
    sent = value_at(path)
    if what.startswith(("Expected `int` >", "Expected `int` <")) and isinstance(base, mi.IntType):
        return refuse(f"must be an integer between {_bounds(base)}")
    if what.startswith(("Expected `float` >", "Expected `float` <")) and isinstance(
        base, mi.FloatType
    ):
        return refuse(f"must be a number between {_bounds(base)}")
    if what.startswith("Expected `str` matching regex"):
        extra = meta.extra if meta is not None and meta.extra else {}
        if "problem" in extra:
            return refuse(extra["problem"])
        shown = (
            printable(sent[:60]) + ("…" if len(sent) > 60 else "")
            if isinstance(sent, str)
            else sent
        )
        return refuse(
            f"{shown!r} is invalid: {extra.get('rule', 'does not match ' + base.pattern)}"
        )
    if what.startswith("Expected `str` of length") and isinstance(base, mi.StrType):
        got = f", not {len(sent)}" if isinstance(sent, str) else ""
        return refuse(f"must be {base.min_length or 0} to {base.max_length} characters{got}")
    if what.startswith("Expected `array` of length") and isinstance(base, mi.ListType):
        got = f", not {len(sent)}" if isinstance(sent, list) else ""
        return refuse(f"must have {base.min_length or 0} to {base.max_length} items{got}")
    if what.startswith(("Invalid RFC3339", "Expected `datetime`")):
        return refuse("must be an RFC 3339 date-time with an offset, e.g. 2030-01-01T12:00:00Z")
    if what.startswith("Invalid enum value") and isinstance(base, mi.LiteralType):
        shown = printable(str(sent)[:40])
        return refuse(f"must be one of {', '.join(map(str, base.values))}, not {shown!r}")
    # A rule across fields (``__post_init__``) names its field first: ``run_at: …``.
    name, _, problem = what.partition(": ")
    if problem and _field_type(field_type, name) is not _NOT_FOUND:
        return refuse(problem, [*path, name])
    return refuse(what)  # not expected: msgspec's own words, still a 400 naming the place


def _parse_path(text: str) -> Path:
    return [key if key else int(index) for key, index in _SEGMENT.findall(text)]


def field_name(path: Path) -> str:
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else seg)
    return out


def _quoted(text: str) -> str:
    found = _QUOTED.search(text)
    return found.group(1) if found else ""


def printable(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")[:80]


def _unwrap(t: Any) -> tuple[Any, mi.Metadata | None]:
    """The type under its ``Annotated`` metadata (the first non-object member of a union:
    only ``error`` is a union, and its constraints are on the string)."""
    meta = None
    if isinstance(t, mi.UnionType):
        t = next((m for m in t.types if not isinstance(m, mi.DictType | mi.NoneType)), t)
    if isinstance(t, mi.Metadata):
        meta, t = t, t.type
    return t, meta


def _struct(t: Any) -> mi.StructType:
    base, _ = _unwrap(t)
    assert isinstance(base, mi.StructType), base
    return base


def _field_type(t: Any, name: str) -> Any:
    base, _ = _unwrap(t)
    if isinstance(base, mi.StructType):
        for f in base.fields:
            if f.encode_name == name:
                return f.type
    return _NOT_FOUND


def _type_at(t: Any, path: Path) -> Any:
    for seg in path:
        base, _ = _unwrap(t)
        if isinstance(seg, int) and isinstance(base, mi.ListType):
            t = base.item_type
        elif isinstance(seg, str) and (found := _field_type(base, seg)) is not _NOT_FOUND:
            t = found
        else:
            return mi.AnyType()
    return t


def _kind(want: str, t: Any) -> str:
    base, _ = _unwrap(t)
    if isinstance(base, mi.DateTimeType):
        return "an RFC 3339 date-time string"
    return {
        "int": "an integer",
        "float": "a number",
        "str": "a string",
        "bool": "true or false",
        "object": "a JSON object",
        "array": "an array",
        "str | object": "a string or an object",
    }.get(want, f"of type {want}")


def _bounds(t: mi.IntType | mi.FloatType) -> str:
    return f"{t.ge:g} and {t.le:g}" if isinstance(t, mi.FloatType) else f"{t.ge} and {t.le}"
