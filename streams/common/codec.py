"""Avro in the Confluent wire format: magic byte 0, 4-byte schema id, schemaless Avro body.

Code compiled once per schema (``avro_fast``) writes and reads the records it takes, fastavro
the rest and every error (the hot path); confluent-kafka's registry client
resolves schema ids once per subject and schema and caches them, so a record costs no
registry round trip. Redpanda Console and any Confluent deserializer read what this writes.
"""

from __future__ import annotations

import io
import json
import struct
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streams.common.avro_fast import NotTakenError, compile_reader, compile_writer
from streams.common.exceptions import MemstreamError, UnavailableError

MAGIC = 0
# The registry's error code for "no schema with this id" (Confluent API, Redpanda, Apicurio).
SCHEMA_NOT_FOUND = 40403
_HEADER = struct.Struct(">bI")
# What compiled code raises for a record it does not take (fastavro then writes or reads it).
_NOT_TAKEN = (NotTakenError, LookupError, TypeError, ValueError, OverflowError, struct.error)
Reader = Callable[[bytes, int], dict[str, Any]]


class CodecError(MemstreamError):
    """Bytes that are not memstream Avro, or a schema the registry does not know."""


class AvroCodec:
    """Encode and decode records of registered subjects, with schema ids cached."""

    def __init__(
        self,
        registry: SchemaRegistryClient,
        *,
        auto_register: bool = False,
        logical_types: bool = True,
    ) -> None:
        """``logical_types=False`` decodes timestamps as epoch milliseconds instead of
        datetimes (same bytes, no conversion per record: the read replica wants ints)."""
        self.registry = registry
        self.auto_register = auto_register
        self.logical_types = logical_types
        self._lock = threading.Lock()
        self._writers: dict[tuple[str, str], _Writer] = {}
        # schema id -> (fastavro's parsed writer schema, the compiled reader or None)
        self._by_id: dict[int, tuple[Any, Reader | None]] = {}
        self._readers: dict[str, Any] = {}
        # Hot path: callers pass the same schema objects (registry.latest_schema is cached),
        # so look them up by identity; the cached object is kept so its id stays unique.
        self._writer_fast: dict[tuple[str, int], tuple[Mapping[str, Any], _Writer]] = {}
        self._reader_fast: dict[tuple[int, int], tuple[Mapping[str, Any], Any]] = {}
        self._readers_by_object: dict[int, tuple[Mapping[str, Any], Any]] = {}
        # (5-byte frame, id(reader schema)) -> (reader schema, writer, resolved reader,
        # compiled reader): one dict lookup per decoded record.
        self._decode_fast: dict[tuple[bytes, int], tuple[Any, Any, Any, Reader | None]] = {}

    def schema_id(self, subject: str, schema: Mapping[str, Any]) -> int:
        """The registry id of ``schema`` under ``subject`` (looked up once, then cached)."""
        return self._writer(subject, schema).schema_id

    def encode(self, subject: str, schema: Mapping[str, Any], record: Mapping[str, Any]) -> bytes:
        """Wire-format bytes of ``record`` written with ``schema``."""
        writer = self._writer(subject, schema)
        if writer.compiled is not None:
            try:
                return writer.header + writer.compiled(record)
            except _NOT_TAKEN:
                pass  # fastavro writes it, or raises its own error
        buf = io.BytesIO()
        buf.write(writer.header)
        fastavro.schemaless_writer(buf, writer.parsed, record)
        return buf.getvalue()

    def decode(self, data: bytes, reader_schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Decode wire-format bytes; with ``reader_schema`` resolve to that version."""
        if data is None:
            raise CodecError("0 bytes: too short for Avro")
        fast = self._decode_fast.get((data[: _HEADER.size], id(reader_schema)))
        if fast is not None and fast[0] is reader_schema:
            writer, reader, compiled = fast[1], fast[2], fast[3]
        else:
            writer, reader, compiled = self._decoding(data, reader_schema)
        if compiled is not None and type(data) is bytes:
            try:
                return compiled(data, _HEADER.size)
            except _NOT_TAKEN:
                pass  # fastavro reads it, or raises its own error
        try:
            body = io.BytesIO(memoryview(data)[_HEADER.size :])
            value = fastavro.schemaless_reader(body, writer, reader)
        except (EOFError, ValueError, TypeError, IndexError, KeyError, OverflowError) as exc:
            # OverflowError: a timestamp-millis past the years a datetime holds (1 to 9999).
            schema_id = _HEADER.unpack_from(data)[1]
            raise CodecError(f"schema id {schema_id}: body does not decode: {exc}") from exc
        if not isinstance(value, dict):  # every memstream schema is a record
            schema_id = _HEADER.unpack_from(data)[1]
            raise CodecError(f"schema id {schema_id}: decodes to a {type(value).__name__}, "
                             "not a record")
        return value

    def _decoding(self, data: bytes, reader_schema: Mapping[str, Any] | None
                  ) -> tuple[Any, Any, Reader | None]:
        """(writer, resolved reader, compiled reader) for ``data``'s frame, checked and then
        cached. Code is compiled for the writer's schema, so only where no resolution is
        needed."""
        if len(data) < _HEADER.size:
            raise CodecError(f"{len(data)} bytes: too short for Avro")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise CodecError(f"magic byte {magic}, expected {MAGIC}: not Confluent-framed Avro")
        writer, compiled = self._writer_by_id(schema_id)
        reader = self._resolution(schema_id, writer, reader_schema)
        if reader is not None:
            compiled = None  # compiled for the writer's schema: no resolution
        if len(self._decode_fast) < 1024:
            self._decode_fast[(data[: _HEADER.size], id(reader_schema))] = (
                reader_schema, writer, reader, compiled)
        return writer, reader, compiled

    # -- caches -------------------------------------------------------------------------
    def _writer(self, subject: str, schema: Mapping[str, Any]) -> _Writer:
        fast = self._writer_fast.get((subject, id(schema)))
        if fast is not None and fast[0] is schema:
            return fast[1]
        entry = self._writer_slow(subject, schema)
        self._writer_fast[(subject, id(schema))] = (schema, entry)
        return entry

    def _writer_slow(self, subject: str, schema: Mapping[str, Any]) -> _Writer:
        text = json.dumps(schema, sort_keys=True)
        key = (subject, text)
        cached = self._writers.get(key)
        if cached is not None:
            return cached
        with self._lock:
            schema_id = self._resolve(subject, Schema(json.dumps(schema), "AVRO"))
            entry = _Writer(schema_id, _HEADER.pack(MAGIC, schema_id),
                            fastavro.parse_schema(dict(schema)), compile_writer(dict(schema)))
            self._writers[key] = entry
            # Decoding with logical types reuses this schema; without, it parses a plain copy.
            if self.logical_types and schema_id not in self._by_id:
                self._by_id[schema_id] = (entry.parsed, compile_reader(dict(schema)))
            return entry

    def _resolve(self, subject: str, schema: Schema) -> int:
        try:
            if self.auto_register:
                return self.registry.register_schema(subject, schema)
            schema_id = self.registry.lookup_schema(subject, schema).schema_id
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise CodecError(
                    f"subject {subject!r} has no such schema version in the registry "
                    "(run `memstream schemas register`)"
                ) from exc
            if not _definitive(exc):
                raise UnavailableError(
                    f"schema registry failed looking up {subject!r}: {exc}") from exc
            raise CodecError(f"registry refused {subject!r}: {exc}") from exc
        except Exception as exc:  # requests/httpx connection errors and timeouts
            raise UnavailableError(f"schema registry unreachable: {exc}") from exc
        if schema_id is None:
            raise CodecError(f"registry found {subject!r}'s schema but answered no id")
        return schema_id

    def _writer_by_id(self, schema_id: int) -> tuple[Any, Reader | None]:
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        try:
            schema = self.registry.get_schema(schema_id)
        except SchemaRegistryError as exc:
            # Only the registry's "no such id" (404, code 40403) makes the record
            # undecodable; a 5xx, a timeout, a refused login or a 404 that is not the
            # registry's own answer (a wrong URL) is infrastructure: the caller waits.
            if exc.http_status_code == 404 and exc.error_code == SCHEMA_NOT_FOUND:
                raise CodecError(
                    f"schema id {schema_id} is unknown to the registry: {exc}") from exc
            raise UnavailableError(
                f"schema registry failed looking up schema id {schema_id}: {exc}") from exc
        except Exception as exc:  # connection errors
            raise UnavailableError(f"schema registry unreachable: {exc}") from exc
        if schema.schema_str is None:
            raise CodecError(f"schema id {schema_id}: the registry answered no schema text")
        try:
            plain = self._plain(json.loads(schema.schema_str))
            parsed = fastavro.parse_schema(plain)
        except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
            raise CodecError(f"schema id {schema_id} is not an Avro schema: {exc}") from exc
        entry = self._by_id[schema_id] = (parsed, compile_reader(plain))
        return entry

    def _resolution(
        self, schema_id: int, writer: Any, reader_schema: Mapping[str, Any] | None
    ) -> Any:
        """The reader schema to resolve ``schema_id``'s records to; None when the writer
        schema is the same, which saves fastavro a schema resolution per record."""
        if reader_schema is None:
            return None
        fast = self._reader_fast.get((schema_id, id(reader_schema)))
        if fast is not None and fast[0] is reader_schema:
            return fast[1]
        reader = self._reader(reader_schema)
        resolved = None if reader == writer else reader
        self._reader_fast[(schema_id, id(reader_schema))] = (reader_schema, resolved)
        return resolved

    def _reader(self, schema: Mapping[str, Any]) -> Any:
        # Callers pass the same (cached, never mutated) schema object for every record:
        # look it up by identity first, since serializing it costs more than the decode.
        # The entry keeps the object alive, so its id cannot be reused by another.
        hit = self._readers_by_object.get(id(schema))
        if hit is not None and hit[0] is schema:
            return hit[1]
        text = json.dumps(schema, sort_keys=True)
        parsed = self._readers.get(text)
        if parsed is None:
            parsed = self._readers[text] = fastavro.parse_schema(self._plain(dict(schema)))
        if len(self._readers_by_object) < 1024:
            self._readers_by_object[id(schema)] = (schema, parsed)
        return parsed

    def _plain(self, schema: Any) -> Any:
        return schema if self.logical_types else without_logical_types(schema)


class _Writer(NamedTuple):
    schema_id: int
    header: bytes  # the 5-byte frame
    parsed: Any  # fastavro's parsed schema
    compiled: Callable[[Mapping[str, Any]], bytes] | None


def _definitive(exc: SchemaRegistryError) -> bool:
    """A 4xx that says something about the request (409 incompatible, 422 invalid), not
    about the registry's health (408 timeout, 429 throttled, 401/403 credentials)."""
    status = exc.http_status_code
    return status is not None and 400 <= status < 500 and status not in (401, 403, 408, 429)


def without_logical_types(schema: Any) -> Any:
    """The schema with every ``logicalType`` removed (same binary encoding)."""
    if isinstance(schema, dict):
        return {k: without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [without_logical_types(v) for v in schema]
    return schema


def to_millis(value: Any) -> int:
    """An Avro timestamp-millis as decoded (datetime) or given (int), as epoch milliseconds."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)
