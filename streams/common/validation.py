"""Check an event before anything is sent, naming the bad field: against its Avro schema
(``validate_record``) and against what the agents refuse (``check_event``, which the agents
call on every record they read, so the door and the pipeline apply one rule)."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NoReturn

from streams.common.content import normalize_text
from streams.common.exceptions import ValidationError

# One rule for tenant names wherever they appear (SDK, agents, token file, HTTP): 1-64 ASCII
# letters, digits, '.', '_' or '-', starting with a letter or digit. A tenant keys every
# store, partition and query; a name that passes round-trips exactly through a
# `token=tenant` line (no '#', '=', ',', spaces), a record key (no ':') and a URL path
# segment, and is the same string in every Unicode normal form.
TENANT_MAX_CHARS = 64
TENANT_RULE = "1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0," + str(TENANT_MAX_CHARS - 1) + "}")
# feedback.v1's rating, as its schema declares it ("in [0,1], 1 = best").
RATING_RANGE = (0.0, 1.0)
# Identifier fields, at most this many bytes of UTF-8 anywhere: an id is copied into every
# memory it merges into (twice, in up to 1,000 source ids and merges), so long ids would
# make memory records the broker refuses (memories.v1 takes 1 MiB a record).
ID_FIELDS = ("event_id", "session_id", "interaction_id")
ID_MAX_BYTES = 256
# Topics whose records carry a text that becomes a memory.
_TEXT_TOPICS = frozenset({"telemetry.v1", "transcripts.v1", "scored.v1"})

_MISSING = object()
_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def validate_record(
    schema: Mapping[str, Any], record: Mapping[str, Any], *, where: str, limits: Mapping[str, int]
) -> dict[str, Any]:
    """Return ``record`` with defaults filled, or raise ValidationError naming the field.

    ``limits`` maps a field name (wherever it appears) to its largest size: characters for
    strings, bytes for bytes.
    """
    return _record(schema, record, "", where, limits)


def _record(
    schema: Mapping[str, Any], value: Any, path: str, where: str, limits: Mapping[str, int]
) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        _fail(where, path or "<record>", f"must be a record (object), got {_type_name(value)}")
    known = {f["name"] for f in schema["fields"]}
    unknown = sorted(set(value) - known)
    if unknown:
        name = _join(path, unknown[0])
        fields = ", ".join(sorted(known))
        _fail(where, name, f"is not a field of {schema['name']} (fields: {fields})")
    out: dict[str, Any] = {}
    for field in schema["fields"]:
        name = field["name"]
        fpath = _join(path, name)
        given = value.get(name, _MISSING)
        if given is _MISSING:
            if "default" not in field:
                _fail(where, fpath, "is required")
            out[name] = field["default"]
            continue
        out[name] = _value(field["type"], given, fpath, where, limits, name)
    return out


def _value(
    ftype: Any, value: Any, path: str, where: str, limits: Mapping[str, int], name: str
) -> Any:
    if isinstance(ftype, list):
        return _union(ftype, value, path, where, limits, name)
    if isinstance(ftype, str):
        return _primitive(ftype, {}, value, path, where, limits, name)
    kind = ftype["type"]
    if kind == "record":
        return _record(ftype, value, path, where, limits)
    if kind == "enum":
        if value not in ftype["symbols"]:
            _fail(where, path, f"must be one of {', '.join(ftype['symbols'])}, got {value!r}")
        return value
    if kind == "array":
        if isinstance(value, str | bytes | Mapping) or not hasattr(value, "__iter__"):
            _fail(where, path, f"must be a list, got {_type_name(value)}")
        return [
            _value(ftype["items"], v, f"{path}[{i}]", where, limits, name)
            for i, v in enumerate(value)
        ]
    if kind == "map":
        if not isinstance(value, Mapping):
            _fail(where, path, f"must be an object (map), got {_type_name(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                _fail(where, path, f"map keys must be strings, got {_type_name(k)}")
            out[k] = _value(ftype["values"], v, f"{path}.{k}", where, limits, name)
        return out
    return _primitive(kind, ftype, value, path, where, limits, name)


def _union(
    branches: list[Any], value: Any, path: str, where: str, limits: Mapping[str, int], name: str
) -> Any:
    if value is None:
        if "null" in branches:
            return None
        _fail(where, path, "must not be null")
    errors = []
    for branch in branches:
        if branch == "null":
            continue
        try:
            return _value(branch, value, path, where, limits, name)
        except ValidationError as exc:
            errors.append(exc)
    # One non-null branch (the common ["null", T]): its error is the precise one.
    if len(errors) == 1:
        raise errors[0]
    _fail(where, path, f"matches none of the types {branches}, got {_type_name(value)}")
    return None  # unreachable


def _primitive(
    kind: str,
    ftype: Mapping[str, Any],
    value: Any,
    path: str,
    where: str,
    limits: Mapping[str, int],
    name: str,
) -> Any:
    logical = ftype.get("logicalType")
    if logical in ("timestamp-millis", "timestamp-micros"):
        if isinstance(value, datetime):
            if value.tzinfo is None:
                _fail(where, path, "must be a timezone-aware datetime (UTC)")
            return value
    if kind == "null":
        if value is not None:
            _fail(where, path, "must be null")
        return None
    if kind == "boolean":
        if not isinstance(value, bool):
            _fail(where, path, f"must be a boolean, got {_type_name(value)}")
        return value
    if kind in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, path, f"must be an integer ({kind}), got {_type_name(value)}")
        lo, hi = _INT_RANGE[kind]
        if not lo <= value <= hi:
            _fail(where, path, f"is out of range for {kind}: {value}", limit=hi)
        return value
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(where, path, f"must be a number, got {_type_name(value)}")
        if not math.isfinite(value):
            _fail(where, path, f"must be a finite number, got {value}")
        return float(value)
    if kind == "string":
        if not isinstance(value, str):
            _fail(where, path, f"must be a string, got {_type_name(value)}")
        _check_utf8(value, where, path)
        limit = limits.get(name)
        if limit is not None and len(value) > limit:
            _fail(
                where, path, f"is {len(value)} characters, over the limit of {limit}", limit=limit
            )
        return value
    if kind in ("bytes", "fixed"):
        if not isinstance(value, bytes | bytearray | memoryview):
            _fail(where, path, f"must be bytes, got {_type_name(value)}")
        size = len(value)
        limit = limits.get(name)
        if limit is not None and size > limit:
            _fail(where, path, f"is {size} bytes, over the limit of {limit} bytes", limit=limit)
        return bytes(value)
    _fail(where, path, f"has an unsupported schema type {kind!r}")
    return None  # unreachable


def check_event(
    topic: str,
    record: Mapping[str, Any],
    *,
    max_text_chars: int,
    now_ms: int | None = None,
    max_ahead_ms: int | None = None,
) -> None:
    """Raise ValidationError for what an agent would refuse in a schema-valid ``record`` of
    ``topic`` (base name): a bad tenant, an id over ``ID_MAX_BYTES``, a text that is empty
    after the normalization memorize uses or over ``max_text_chars``, a rating outside
    ``RATING_RANGE``, an ``event_time`` more than ``max_ahead_ms`` after ``now_ms`` (the SDK's
    clock, or the record's broker timestamp in an agent). ``.code`` says which: invalid,
    empty, oversize or event_time_ahead."""
    check_tenant(record.get("tenant"), where=topic)
    check_ids(record, where=topic)
    if topic in _TEXT_TOPICS:
        text = record.get("text")
        if not isinstance(text, str):
            _fail(topic, "text", f"must be a string, got {_type_name(text)}")
        if len(text) > max_text_chars:
            raise ValidationError(
                f"{topic}: field 'text' is {len(text)} characters, over the limit of "
                f"{max_text_chars}", field="text", limit=max_text_chars, code="oversize")
        if not _visible(normalize_text(text)):
            raise ValidationError(
                f"{topic}: field 'text' is empty after normalization (whitespace, "
                f"punctuation or invisible characters only, {len(text)} characters): "
                "nothing to remember",
                field="text", code="empty")
    if topic == "feedback.v1":
        rating = record.get("rating")
        lo, hi = RATING_RANGE
        if (isinstance(rating, bool) or not isinstance(rating, int | float)
                or not math.isfinite(rating) or not lo <= rating <= hi):
            _fail(topic, "rating", f"must be a number in [{lo:g}, {hi:g}], got {rating!r}",
                  limit=hi)
    if now_ms is not None and max_ahead_ms is not None:
        event_ms = _millis(record.get("event_time"))
        if event_ms is not None and event_ms - now_ms > max_ahead_ms:
            raise ValidationError(
                f"{topic}: field 'event_time' is {(event_ms - now_ms) / 1000:.0f}s ahead of "
                f"the clock it is checked against, over the limit of {max_ahead_ms / 1000:.0f}s",
                field="event_time", limit=max_ahead_ms, code="event_time_ahead")


def check_ids(record: Mapping[str, Any], *, where: str) -> None:
    """Raise ValidationError (code oversize) for an id field over ``ID_MAX_BYTES`` of UTF-8."""
    for name in ID_FIELDS:
        value = record.get(name)
        if not isinstance(value, str) or len(value) <= ID_MAX_BYTES // 4:
            continue  # no id, or short enough whatever its characters
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > ID_MAX_BYTES:
            raise ValidationError(
                f"{where}: field {name!r} is {size} bytes in UTF-8 ({len(value)} characters), "
                f"over the limit of {ID_MAX_BYTES} for an id", field=name, limit=ID_MAX_BYTES,
                code="oversize")


def tenant_problem(tenant: object) -> str | None:
    """Why ``tenant`` is not a valid tenant name, or None when it is."""
    if not isinstance(tenant, str):
        return f"must be a string, got {_type_name(tenant)}"
    if _TENANT.fullmatch(tenant):
        return None
    shown = tenant if len(tenant) <= 80 else f"{tenant[:80]}... ({len(tenant)} characters)"
    return f"{shown!r} is not a tenant name ({TENANT_RULE})"


def check_tenant(tenant: Any, *, where: str) -> str:
    """Return ``tenant`` when it follows the tenant rule, else raise ValidationError."""
    if tenant == "":
        raise ValidationError(f"{where}: field 'tenant' must not be empty", field="tenant",
                              code="empty")
    problem = tenant_problem(tenant)
    if problem is not None:
        _fail(where, "tenant", problem, limit=TENANT_MAX_CHARS)
    return str(tenant)


def _visible(normalized: str) -> bool:
    """Whether a normalized text has a character one can see (not a control, format such as
    zero-width or bidi, or separator character)."""
    return any(not unicodedata.category(c).startswith(("C", "Z")) for c in normalized)


def _millis(value: Any) -> int | None:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _check_utf8(value: str, where: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        _fail(where, path, f"is not valid Unicode: lone surrogate U+{ord(value[exc.start]):04X} "
              f"at position {exc.start}")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _fail(where: str, field: str, problem: str, limit: object | None = None) -> NoReturn:
    raise ValidationError(f"{where}: field {field!r} {problem}", field=field, limit=limit)
