"""Check an event against its Avro schema before anything is sent, naming the bad field."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from streams.exceptions import ValidationError

_MISSING = object()

# One rule for tenant names wherever they appear (SDK, token file, HTTP): 1-64 ASCII
# letters, digits, '.', '_' or '-', starting with a letter or digit. A name that passes
# round-trips exactly through a `token=tenant` line (no '#', '=', ',', spaces), a record
# key (no ':') and a URL path segment, and is the same string in every normal form.
TENANT_MAX_CHARS = 64
TENANT_RULE = "1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0," + str(TENANT_MAX_CHARS - 1) + "}")


def tenant_problem(tenant: object) -> str | None:
    """Why ``tenant`` is not a valid tenant name, or None when it is."""
    if not isinstance(tenant, str):
        return f"must be a string, got {_type_name(tenant)}"
    if _TENANT.fullmatch(tenant):
        return None
    shown = tenant if len(tenant) <= 80 else f"{tenant[:80]}... ({len(tenant)} characters)"
    return f"{shown!r} is not a tenant name ({TENANT_RULE})"


def validate_tenant(tenant: object, *, where: str) -> str:
    """Return ``tenant`` when it follows the tenant rule, else raise ValidationError."""
    problem = tenant_problem(tenant)
    if problem is not None:
        _fail(where, "tenant", problem, limit=TENANT_MAX_CHARS)
    return str(tenant)
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


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _fail(where: str, field: str, problem: str, limit: object | None = None) -> None:
    raise ValidationError(f"{where}: field {field!r} {problem}", field=field, limit=limit)
