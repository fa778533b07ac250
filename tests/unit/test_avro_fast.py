"""Code compiled per schema writes the bytes fastavro writes and reads what fastavro reads.

Differential: random records of every schema in ``schemas/`` (edge values included: empty,
multi-byte and long strings, the ends of int and long, NaN and infinities, lists past the
small-count table) go through both. Records the compiled code must not take go to fastavro
through ``AvroCodec``, with fastavro's bytes or fastavro's error.
"""

from __future__ import annotations

import io
import json
import math
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fastavro
import pytest

from streams.common.avro_fast import NotTakenError, compile_reader, compile_writer
from streams.common.codec import AvroCodec, CodecError, without_logical_types

SCHEMAS = sorted((Path(__file__).resolve().parents[2] / "schemas").glob("*.avsc"))
EDGE_STRINGS = ["", "a", "é", "日本語", "🙂" * 3, "x" * 5000, "\x00nul", "tenant\x00id"]


def _value(schema: Any, named: dict[str, Any], rng: random.Random) -> Any:  # noqa: C901, PLR0911, PLR0912
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, list):
        branch = rng.choice(schema)
        return None if branch == "null" else _value(branch, named, rng)
    kind = schema if isinstance(schema, str) else schema["type"]
    if isinstance(kind, (dict, list)):
        return _value(kind, named, rng)
    if kind == "string":
        return rng.choice(EDGE_STRINGS + ["".join(chr(rng.randrange(32, 0x3000)) for _ in
                                                  range(rng.randrange(40)))])
    if kind == "bytes":
        return rng.randbytes(rng.choice([0, 1, 127, 128, 1536, 5000]))
    if kind in ("int", "long"):
        top = 2**31 if kind == "int" else 2**63
        if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
            top = 2**44  # datetimes stay within year 9999
        return rng.choice([0, 1, -1, 63, 64, -65, 4095, 4096, top - 1, -top,
                           rng.randrange(-top, top)])
    if kind == "double":
        return rng.choice([0.0, -0.0, 1.5, math.inf, -math.inf, math.nan, 1e308, rng.random(),
                           7])
    if kind == "float":
        return rng.choice([0.0, 0.5, -2.25])
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "enum":
        named[schema["name"]] = schema
        return rng.choice(schema["symbols"])
    if kind == "array":
        size = rng.choice([0, 1, 3, 4097]) if rng.random() < 0.2 else rng.randrange(3)
        return [_value(schema["items"], named, rng) for _ in range(size)]
    if kind == "map":
        return {rng.choice(EDGE_STRINGS) + str(i): _value(schema["values"], named, rng)
                for i in range(rng.randrange(4))}
    if kind == "record":
        named[schema["name"]] = schema
        return {f["name"]: _value(f["type"], named, rng) for f in schema["fields"]}
    raise AssertionError(f"no generator for {kind!r}")


def _fastavro_bytes(schema: Any, record: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return buf.getvalue()


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.stem)
def test_compiled_code_writes_and_reads_every_schema_as_fastavro_does(path: Path) -> None:
    schema = json.loads(path.read_text())
    write, read = compile_writer(schema), compile_reader(schema)
    read_plain = compile_reader(without_logical_types(schema))
    assert write is not None and read is not None and read_plain is not None, path.name
    parsed = fastavro.parse_schema(schema)
    plain = fastavro.parse_schema(without_logical_types(schema))
    rng = random.Random(path.stem)
    for _ in range(300):
        record = _value(schema, {}, rng)
        expected = _fastavro_bytes(schema, record)
        assert write(record) == expected
        framed = b"\x00\x00\x00\x00\x07" + expected  # read at an offset, as the codec does
        for compiled, reader_schema in ((read, parsed), (read_plain, plain)):
            theirs = fastavro.schemaless_reader(io.BytesIO(expected), reader_schema, None)
            assert repr(compiled(framed, 5)) == repr(theirs)  # repr: NaN equals NaN


def test_timestamps_read_as_aware_datetimes_and_write_from_them() -> None:
    schema = {"type": "record", "name": "T", "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
    write, read = compile_writer(schema), compile_reader(schema)
    assert write is not None and read is not None
    moment = datetime(2026, 12, 2, 13, 30, 0, 123456, tzinfo=UTC)
    body = write({"at": moment})
    assert body == _fastavro_bytes(schema, {"at": moment})
    assert read(body, 0) == {"at": moment - timedelta(microseconds=456)}
    with pytest.raises(NotTakenError):  # a naive datetime's zone is fastavro's business
        write({"at": datetime(2026, 12, 2)})  # noqa: DTZ001
    east, west = timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))
    for aware in (datetime(1969, 7, 20, 20, 17, 40, 999999, tzinfo=west),  # before the epoch
                  datetime(1, 1, 1, 5, 30, tzinfo=east), datetime(9999, 12, 31, tzinfo=UTC),
                  datetime(2026, 3, 29, 2, 30, 0, 500, tzinfo=east)):
        assert write({"at": aware}) == _fastavro_bytes(schema, {"at": aware}), aware


def _nested_arrays(depth: int) -> Any:
    return "long" if depth == 0 else {"type": "array", "items": _nested_arrays(depth - 1)}


@pytest.mark.parametrize("schema", [
    {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["string", "long"]}]},
    {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["null", "string", "long"]}]},
    {"type": "record", "name": "D", "fields": [
        {"name": "d", "type": {"type": "int", "logicalType": "date"}}]},
    {"type": "record", "name": "N", "fields": [{"name": "next", "type": ["null", "N"]}]},
    {"type": "record", "name": "A", "fields": [{"name": "a", "type": {"type": "array",
                                                                  "items": "null"}}]},
    {"type": "record", "name": "Deep", "fields": [{"name": "a", "type": _nested_arrays(30)}]},
    {"type": "record", "name": "Two", "fields": [
        {"name": "x", "type": {"type": "record", "name": "X", "namespace": "one",
                               "fields": [{"name": "i", "type": "int"}]}},
        {"name": "y", "type": {"type": "record", "name": "X", "namespace": "two",
                               "fields": [{"name": "s", "type": "string"}]}},
        {"name": "z", "type": "X"}]},
], ids=["two-type-union", "three-branch-union", "date", "recursive", "array-of-null",
        "deeper-than-python-nests", "one-short-name-two-types"])
def test_shapes_not_compiled_are_left_to_fastavro(schema: dict[str, Any]) -> None:
    assert compile_reader(schema) is None
    if schema["name"] != "A":  # arrays of null write (no read guard needed)
        assert compile_writer(schema) is None


class _Registry:
    """One subject, one schema, as the Confluent client answers (branch tests only)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.text = json.dumps(schema)

    def lookup_schema(self, subject: str, schema: Any) -> Any:
        return SimpleNamespace(schema_id=7)

    def get_schema(self, schema_id: int) -> Any:
        return SimpleNamespace(schema_str=self.text)


SCHEMA = {"type": "record", "name": "R", "fields": [
    {"name": "n", "type": "long"}, {"name": "s", "type": ["null", "string"], "default": None},
    {"name": "k", "type": {"type": "enum", "name": "K", "symbols": ["A", "B"]}},
    {"name": "xs", "type": {"type": "array", "items": "int"}}]}


@pytest.mark.parametrize("record", [
    {"n": True, "s": None, "k": "A", "xs": []},  # bool for long: fastavro writes 1
    {"n": 1, "k": "B", "xs": []},  # missing field with a default
    {"n": 1, "s": None, "k": "A", "xs": (1, 2)},  # a tuple for an array
    {"n": 2**63, "s": None, "k": "A", "xs": []},  # past a long
    {"n": 1.0, "s": None, "k": "A", "xs": []},  # a float for a long
    {"n": 1, "s": "\ud800", "k": "A", "xs": []},  # a lone surrogate
    {"n": 1, "s": None, "k": "C", "xs": []},  # not a symbol
    {"n": 1, "s": None, "k": ["A"], "xs": []},  # unhashable for an enum
    {"n": 1, "s": None, "k": "A"},  # missing field, no default
    "not a record",
], ids=["bool", "default", "tuple", "overflow", "float", "surrogate", "symbol",
        "unhashable", "missing", "string"])
def test_a_record_the_compiled_code_refuses_gets_fastavros_bytes_or_error(record: Any) -> None:
    codec = AvroCodec(_Registry(SCHEMA))  # type: ignore[arg-type]
    try:
        expected: bytes | str = b"\x00\x00\x00\x00\x07" + _fastavro_bytes(SCHEMA, record)
    except Exception as exc:  # noqa: BLE001 - whatever fastavro raises, the codec must too
        expected = type(exc).__name__
    try:
        got: bytes | str = codec.encode("s", SCHEMA, record)
    except Exception as exc:  # noqa: BLE001
        got = type(exc).__name__
    assert got == expected


def test_a_timestamp_past_year_9999_is_undecodable_not_an_overflow() -> None:
    schema = {"type": "record", "name": "T", "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
    codec = AvroCodec(_Registry(schema))  # type: ignore[arg-type]
    for millis in (2**62, -(2**62)):
        body = codec.encode("s", schema, {"at": millis})
        with pytest.raises(CodecError, match="does not decode"):
            codec.decode(body)


BOOL_LONG = {"type": "record", "name": "B", "fields": [
    {"name": "b", "type": "boolean"}, {"name": "n", "type": "long"}]}


@pytest.mark.parametrize(("schema", "body"), [
    (SCHEMA, b""), (SCHEMA, b"\x02"), (SCHEMA, b"\x02\x02"), (SCHEMA, b"\xff" * 12),
    (SCHEMA, b"\x02\x00\x04"), (SCHEMA, b"\x02\x00\x00\x05\x02"), (SCHEMA, b"\x02\x03\x08ab"),
    (SCHEMA, b"\x02\x04\xff\xfe\x00\x00"), (SCHEMA, b"\x02\x00\x00\x01\x02"),
    (SCHEMA, b"\x02\x00\x00\x80\x80\x80\x80\x10\x02\x00"),
    (BOOL_LONG, b"\x02\x00"),  # fastavro reads a boolean byte of 2 as True
    (BOOL_LONG, b"\x01" + b"\xff" * 10 + b"\x01"),  # an 11-byte varint: fastavro's long
], ids=["empty", "truncated", "no-enum", "endless-varint", "bad-enum", "bad-union",
        "short-string", "bad-utf8", "negative-count", "huge-count", "boolean-2", "long-varint"])
def test_bytes_the_compiled_code_cannot_read_get_fastavros_answer(schema: dict[str, Any],
                                                                   body: bytes) -> None:
    codec = AvroCodec(_Registry(schema))  # type: ignore[arg-type]
    try:
        expected: Any = fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(schema),
                                                   None)
    except Exception:  # noqa: BLE001 - fastavro's error becomes the codec's CodecError
        expected = CodecError
    try:
        got: Any = codec.decode(b"\x00\x00\x00\x00\x07" + body)
    except CodecError:
        got = CodecError
    assert got == expected
