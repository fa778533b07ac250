"""Avro bodies written and read by code generated for one schema, with fastavro behind it.

fastavro interprets the schema for every record: a memory record (22 fields, a merges
list) costs ~14 µs to write and ~13 µs to read on this project's 2-core machine, a quarter
of the worker's CPU. Straight-line Python compiled once per schema does the same in less
than half (``bench/codec.py``). Only the common, unambiguous shapes are compiled: records,
arrays, maps, enums, fixed, primitives, ``timestamp-millis`` and unions of null and one
other type. Any other schema gets no compiled code, and any record the compiled code does
not take exactly (a value of another type, a missing field with a default, bytes that do
not decode) raises ``NotTakenError``: the caller then hands that record to fastavro, which
writes or rejects it as it always did. Avro's binary encoding has one form per value, so
both produce the same bytes (a differential test checks every schema in ``schemas/``).

(About 340 lines: the writer and the reader are generated case by case over the same
shapes, and each is read against the other.)
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.common.exceptions import MemstreamError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


class NotTakenError(MemstreamError):
    """The compiled code does not take this record: fastavro must (never seen by users)."""


class UnsupportedShapeError(MemstreamError):
    """The schema holds a shape this module does not compile (raised only while compiling)."""


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = tuple(_zigzag(i) for i in range(4096))  # lengths, counts and small ints


def _long(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 4096 else _zigzag(n)


def _millis(value: datetime) -> int:
    """fastavro's conversion of an aware datetime (a naive one goes to fastavro)."""
    if value.tzinfo is None:
        raise NotTakenError
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + int(delta.microseconds / 1000)


def _names(schema: Any, space: str, found: dict[str, Any]) -> None:
    """Every named type in ``schema`` by its full name (and its short name)."""
    if isinstance(schema, list):
        for branch in schema:
            _names(branch, space, found)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            name = schema["name"]
            space = schema.get("namespace", space) if "." not in name else name.rsplit(".", 1)[0]
            short = name.rsplit(".", 1)[-1]
            # A short name two namespaces define is ambiguous: not compiled (None).
            found[short] = schema if found.get(short, schema) is schema else None
            if space:
                found[f"{space}.{short}"] = schema
        for field in schema.get("fields", ()):
            _names(field["type"], space, found)
        for key in ("items", "values"):
            if key in schema:
                _names(schema[key], space, found)
        if isinstance(kind, (dict, list)):
            _names(kind, space, found)


class _Source:
    """Python source being generated: lines, indentation and fresh local names."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.named = named
        self.depth = 1
        self._count = itertools.count()
        self._open: set[str] = set()  # named types being expanded (recursion: refused)

    def var(self, stem: str) -> str:
        return f"{stem}{next(self._count)}"

    def add(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            if self.named.get(schema) is None or schema in self._open:
                raise UnsupportedShapeError(f"named type {schema!r}")
            return self.named[schema]
        if isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)):
            return schema["type"]
        return schema

    def expanding(self, schema: Any) -> str | None:
        name = schema.get("name") if isinstance(schema, dict) else None
        if name is not None:
            self._open.add(name)
        return name

    def done(self, name: str | None) -> None:
        if name is not None:
            self._open.discard(name)


def _kind(schema: Any) -> tuple[str, str | None]:
    if isinstance(schema, str):
        return schema, None
    if isinstance(schema, list):
        return "union", None
    return schema["type"], schema.get("logicalType")


def _optional(schema: list[Any]) -> tuple[int, Any]:
    """(index of null, the other branch) of a [null, T] or [T, null] union."""
    if len(schema) != 2 or "null" not in schema or schema[0] == schema[1]:
        raise UnsupportedShapeError("a union other than null and one type")
    null = schema.index("null")
    return null, schema[1 - null]


# -- writing ------------------------------------------------------------------------------
def compile_writer(schema: Any) -> Callable[[Mapping[str, Any]], bytes] | None:
    """A function writing a record's Avro body, or None where the schema is not compiled."""
    return _compiled(schema, _write, "write", "def write(record):\n    o = bytearray()",
                     "return bytes(o)", {"L": _long, "D": _DOUBLE.pack, "F": _FLOAT.pack,
                                         "datetime": datetime, "millis": _millis})


def _compiled(schema: Any, generate: Callable[[_Source, Any, str], None], name: str,
              head: str, tail: str, scope: dict[str, Any]) -> Any:
    """Python source for ``schema`` by ``generate``, between ``head`` and ``tail``, compiled
    into the function ``name`` (None where a shape is not compiled)."""
    named: dict[str, Any] = {}
    _names(schema, "", named)
    src = _Source(named)
    scope = {**scope, "NotTakenError": NotTakenError}
    try:
        generate(src, schema, "record")
        code = f"{head}\n" + "\n".join(src.lines) + f"\n    {tail}\n"
        # SyntaxError: Python nests at most 20 blocks (arrays of arrays of ... records).
        exec(compile(code, f"<avro {name} {schema.get('name', '?')}>", "exec"), scope)  # noqa: S102
    except (UnsupportedShapeError, RecursionError, SyntaxError):
        return None
    return scope[name]


def _shape(src: _Source, schema: Any) -> tuple[Any, str, str | None]:
    """The schema (named types resolved), its type and its logical type, if compiled."""
    schema = src.resolve(schema)
    kind, logical = _kind(schema)
    if logical is not None and (kind, logical) != ("long", "timestamp-millis"):
        raise UnsupportedShapeError(f"logical type {logical!r}")
    return schema, kind, logical


def _write(src: _Source, schema: Any, value: str) -> None:  # noqa: C901, PLR0912 - one case per type
    schema, kind, logical = _shape(src, schema)
    add = src.add
    if kind == "null":
        add(f"if {value} is not None: raise NotTakenError")
    elif kind == "boolean":
        add(f"if {value} is True: o += b'\\x01'")
        add(f"elif {value} is False: o += b'\\x00'")
        add("else: raise NotTakenError")
    elif kind in ("int", "long"):
        low, high = _RANGES[kind]
        if logical is not None:
            add(f"if type({value}) is datetime: {value} = millis({value})")
        add(f"if type({value}) is not int or not {low} <= {value} <= {high}: raise NotTakenError")
        add(f"o += L({value})")
    elif kind in ("float", "double"):
        add(f"if type({value}) is not float and type({value}) is not int: raise NotTakenError")
        add(f"o += {'D' if kind == 'double' else 'F'}({value})")
    elif kind == "string":
        b = src.var("b")
        add(f"if type({value}) is not str: raise NotTakenError")
        add(f"{b} = {value}.encode()")
        add(f"o += L(len({b})); o += {b}")
    elif kind == "bytes":
        add(f"if type({value}) is not bytes: raise NotTakenError")
        add(f"o += L(len({value})); o += {value}")
    elif kind == "fixed":
        add(f"if type({value}) is not bytes or len({value}) != {int(schema['size'])}: "
            "raise NotTakenError")
        add(f"o += {value}")
    elif kind == "enum":
        index = {symbol: i for i, symbol in enumerate(schema["symbols"])}
        add(f"o += L({index!r}[{value}])")
    elif kind == "union":
        null, other = _optional(schema)
        add(f"if {value} is None: o += {_long(null)!r}")
        add("else:")
        src.depth += 1
        add(f"o += {_long(1 - null)!r}")
        _write(src, other, value)
        src.depth -= 1
    elif kind in ("array", "map"):
        item = src.var("v")
        add(f"if type({value}) is not {'list' if kind == 'array' else 'dict'}: raise NotTakenError")
        add(f"if {value}:")
        src.depth += 1
        add(f"o += L(len({value}))")
        if kind == "array":
            add(f"for {item} in {value}:")
            src.depth += 1
        else:
            key = src.var("k")
            add(f"for {key}, {item} in {value}.items():")
            src.depth += 1
            _write(src, "string", key)
        _write(src, schema["items" if kind == "array" else "values"], item)
        src.depth -= 2
        add("o += b'\\x00'")
    elif kind == "record":
        name = src.expanding(schema)
        add(f"if type({value}) is not dict: raise NotTakenError")
        for field in schema["fields"]:
            item = src.var("f")
            add(f"{item} = {value}[{field['name']!r}]")
            _write(src, field["type"], item)
        src.done(name)
    else:
        raise UnsupportedShapeError(f"type {kind!r}")


# -- reading ------------------------------------------------------------------------------
def compile_reader(schema: Any) -> Callable[[bytes, int], dict[str, Any]] | None:
    """A function reading a record from an Avro body at an offset, or None where the schema
    is not compiled. ``timestamp-millis`` reads as an aware datetime, as in fastavro; a
    schema stripped of logical types reads epoch milliseconds."""
    return _compiled(schema, _read, "read", "def read(d, p):\n    n_ = len(d)",
                     "return record", {"D": _DOUBLE.unpack_from, "F": _FLOAT.unpack_from,
                                       "EPOCH": _EPOCH, "TD": timedelta})


def _read_long(src: _Source, value: str) -> None:
    """A zigzag varint at ``p`` into ``value`` (at most 10 bytes, as a 64-bit long)."""
    add = src.add
    add(f"{value} = d[p]; p += 1")
    add(f"if {value} > 127:")
    add(f"    {value} &= 127; s_ = 7")
    add("    while True:")
    add("        b_ = d[p]; p += 1")
    add(f"        {value} |= (b_ & 127) << s_")
    add("        if b_ < 128: break")
    add("        s_ += 7")
    add("        if s_ > 63: raise NotTakenError")
    add(f"{value} = ({value} >> 1) ^ -({value} & 1)")


def _read(src: _Source, schema: Any, value: str) -> None:  # noqa: C901, PLR0912, PLR0915 - one case per type
    schema, kind, logical = _shape(src, schema)
    add = src.add
    if kind == "null":
        add(f"{value} = None")
    elif kind == "boolean":
        add(f"{value} = d[p]; p += 1")
        add(f"if {value} > 1: raise NotTakenError")
        add(f"{value} = {value} == 1")
    elif kind in ("int", "long"):
        _read_long(src, value)
        if kind == "int":
            add(f"if not -2147483648 <= {value} <= 2147483647: raise NotTakenError")
        if logical is not None:
            add(f"{value} = EPOCH + TD(microseconds={value} * 1000)")
    elif kind in ("float", "double"):
        unpack, width = ("D", 8) if kind == "double" else ("F", 4)
        add(f"{value} = {unpack}(d, p)[0]; p += {width}")
    elif kind in ("string", "bytes", "fixed"):
        size = src.var("n")
        if kind == "fixed":
            add(f"{size} = {int(schema['size'])}")
        else:
            _read_long(src, size)
        add(f"if {size} < 0 or p + {size} > n_: raise NotTakenError")
        decode = ".decode()" if kind == "string" else ""
        add(f"{value} = d[p:p + {size}]{decode}; p += {size}")
    elif kind == "enum":
        symbols = tuple(schema["symbols"])
        _read_long(src, value)
        add(f"if not 0 <= {value} < {len(symbols)}: raise NotTakenError")
        add(f"{value} = {symbols!r}[{value}]")
    elif kind == "union":
        null, other = _optional(schema)
        _read_long(src, value)
        add(f"if {value} == {null}: {value} = None")
        add(f"elif {value} == {1 - null}:")
        src.depth += 1
        _read(src, other, value)
        src.depth -= 1
        add("else: raise NotTakenError")
    elif kind in ("array", "map"):
        count, item = src.var("c"), src.var("v")
        if src.resolve(schema["items" if kind == "array" else "values"]) == "null":
            raise UnsupportedShapeError(f"{kind} of null")
        add(f"{value} = {'[]' if kind == 'array' else '{}'}")
        add("while True:")
        src.depth += 1
        _read_long(src, count)
        add(f"if {count} == 0: break")
        add(f"if {count} < 0:")
        src.depth += 1
        add(f"{count} = -{count}")
        _read_long(src, src.var("size"))
        src.depth -= 1
        add(f"for _ in range({count}):")
        src.depth += 1
        if kind == "map":
            key = src.var("k")
            _read(src, "string", key)
        _read(src, schema["items" if kind == "array" else "values"], item)
        add(f"{value}.append({item})" if kind == "array" else f"{value}[{key}] = {item}")
        src.depth -= 2
    elif kind == "record":
        name = src.expanding(schema)
        fields = []
        for field in schema["fields"]:
            item = src.var("f")
            _read(src, field["type"], item)
            fields.append(f"{field['name']!r}: {item}")
        add(f"{value} = {{{', '.join(fields)}}}")
        src.done(name)
    else:
        raise UnsupportedShapeError(f"type {kind!r}")
