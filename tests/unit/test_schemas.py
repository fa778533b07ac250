"""Tests for the shipped Avro schemas and the compatibility checks in streams.common.schemas."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest

from streams.common.exceptions import MemstreamError, SchemaError
from streams.common.schemas import (
    SCHEMA_DIR,
    SchemaVersion,
    check_all,
    check_compatibility,
    check_versions,
    load_schema_versions,
)

EXPECTED_FILES = {
    "telemetry-1.avsc",
    "telemetry-2.avsc",
    "feedback-1.avsc",
    "voice-1.avsc",
    "transcript-1.avsc",
    "scored-1.avsc",
    "command-1.avsc",
    "memory-1.avsc",
    "memory-2.avsc",
    "summary-1.avsc",
    "deadletter-1.avsc",
}
SCHEMA_PATHS = sorted(SCHEMA_DIR.glob("*.avsc"))


def _schema(path: Path) -> dict[str, Any]:
    """The parsed JSON of one schema file."""
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result


def _named_types(node: Any) -> Iterator[dict[str, Any]]:
    """Every inline record and enum definition in a schema, depth first."""
    if isinstance(node, list):
        for item in node:
            yield from _named_types(item)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum"):
            yield node
        for key in ("fields", "type", "items", "values"):
            if key in node and not isinstance(node[key], str):
                yield from _named_types(node[key])


def _write_versions(directory: Path, base: str, schemas: dict[int, dict[str, Any]]) -> None:
    """Write `<base>-<n>.avsc` files for a crafted subject."""
    directory.mkdir(parents=True, exist_ok=True)
    for number, schema in schemas.items():
        (directory / f"{base}-{number}.avsc").write_text(json.dumps(schema), encoding="utf-8")


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The field definition called `name` in a record schema."""
    found: dict[str, Any] = next(f for f in schema["fields"] if f["name"] == name)
    return found


def test_schema_dir_ships_exactly_the_registered_versions() -> None:
    assert {p.name for p in SCHEMA_PATHS} == EXPECTED_FILES


@pytest.mark.parametrize("path", SCHEMA_PATHS, ids=lambda p: p.name)
def test_schema_parses_with_fastavro_and_avro(path: Path) -> None:
    schema = _schema(path)
    fastavro.parse_schema(copy.deepcopy(schema))
    parsed = avro.schema.parse(json.dumps(schema))
    assert isinstance(parsed, avro.schema.RecordSchema)
    assert parsed.fullname == f"memstream.{schema['name']}"


@pytest.mark.parametrize("path", SCHEMA_PATHS, ids=lambda p: p.name)
def test_every_record_enum_and_field_has_a_doc(path: Path) -> None:
    undocumented: list[str] = []
    for named in _named_types(_schema(path)):
        if not str(named.get("doc", "")).strip():
            undocumented.append(named["name"])
        for fld in named.get("fields", []):
            if not str(fld.get("doc", "")).strip():
                undocumented.append(f"{named['name']}.{fld['name']}")
    assert undocumented == []


@pytest.mark.parametrize("path", SCHEMA_PATHS, ids=lambda p: p.name)
def test_top_level_record_carries_tenant_event_id_and_event_time(path: Path) -> None:
    schema = _schema(path)
    assert schema["namespace"] == "memstream"
    assert _field(schema, "tenant")["type"] == "string"
    assert _field(schema, "event_id")["type"] == "string"
    assert _field(schema, "event_time")["type"] == {
        "type": "long",
        "logicalType": "timestamp-millis",
    }


def test_load_schema_versions_groups_and_sorts_by_subject() -> None:
    by_base = load_schema_versions()
    assert set(by_base) == {
        "telemetry",
        "feedback",
        "voice",
        "transcript",
        "scored",
        "memory",
        "summary",
        "deadletter",
        "command",
    }
    assert [v.version for v in by_base["telemetry"]] == [1, 2]
    first = by_base["telemetry"][0]
    assert isinstance(first, SchemaVersion)
    assert first.record_name == "TelemetryEvent"
    assert first.path == SCHEMA_DIR / "telemetry-1.avsc"
    assert by_base["deadletter"][0].record_name == "DeadLetter"


def test_shipped_versions_pass_every_policy() -> None:
    assert check_all() == []
    strict = {base: "FULL_TRANSITIVE" for base in load_schema_versions()}
    assert check_all(SCHEMA_DIR, strict) == []


def test_telemetry_v2_only_adds_optional_fields_to_v1() -> None:
    v1 = _schema(SCHEMA_DIR / "telemetry-1.avsc")
    v2 = _schema(SCHEMA_DIR / "telemetry-2.avsc")
    v1_names = [f["name"] for f in v1["fields"]]
    v2_names = [f["name"] for f in v2["fields"]]
    assert v2_names[: len(v1_names)] == v1_names
    added = v2["fields"][len(v1_names) :]
    assert [f["name"] for f in added] == ["model", "token_count"]
    assert all("default" in f and f["default"] is None for f in added)


def test_new_required_field_breaks_backward_and_names_the_field(tmp_path: Path) -> None:
    v1 = _schema(SCHEMA_DIR / "telemetry-1.avsc")
    v2 = copy.deepcopy(v1)
    v2["fields"].append({"name": "region", "type": "string", "doc": "Region with no default."})
    _write_versions(tmp_path, "telemetry", {1: v1, 2: v2})

    problems = check_all(tmp_path)

    assert len(problems) == 1
    assert problems[0].startswith("telemetry v2 vs v1: ")
    assert "field 'region' in reader has no default and is missing from writer" in problems[0]
    # Forward only needs old readers to ignore the new field, so it passes.
    assert check_all(tmp_path, {"telemetry": "FORWARD"}) == []
    assert check_all(tmp_path, {"telemetry": "NONE"}) == []


def test_changed_field_type_fails_and_names_the_field(tmp_path: Path) -> None:
    v1 = _schema(SCHEMA_DIR / "feedback-1.avsc")
    v2 = copy.deepcopy(v1)
    _field(v2, "rating")["type"] = "string"
    _write_versions(tmp_path, "feedback", {1: v1, 2: v2})

    problems = check_all(tmp_path, {"feedback": "FULL"})

    assert len(problems) == 2
    assert all(p.startswith("feedback v2 vs v1: ") for p in problems)
    assert all("'rating'" in p for p in problems)
    assert any("v2 cannot read v1" in p and "string" in p and "double" in p for p in problems)
    assert any("v1 cannot read v2" in p for p in problems)


def test_widening_promotion_is_backward_but_not_forward_compatible() -> None:
    v1 = _schema(SCHEMA_DIR / "deadletter-1.avsc")
    v2 = copy.deepcopy(v1)
    _field(v2, "source_partition")["type"] = "long"
    assert check_compatibility(v2, v1) == []
    problems = check_compatibility(v1, v2)
    assert problems == [
        "field 'source_partition': type int in reader cannot read type long from writer"
    ]


def test_nested_record_change_names_the_nested_field_path() -> None:
    writer = _schema(SCHEMA_DIR / "transcript-1.avsc")
    reader = copy.deepcopy(writer)
    segment = _field(reader, "segments")["type"]["items"]
    segment["fields"].append({"name": "speaker", "type": "string", "doc": "Speaker label."})
    _field(segment, "start_s")["type"] = "int"

    problems = check_compatibility(reader, writer)

    assert sorted(problems) == [
        "field 'segments[].speaker' in reader has no default and is missing from writer",
        "field 'segments[].start_s': type int in reader cannot read type double from writer",
    ]


def test_enum_symbol_removed_from_union_branch_names_the_field() -> None:
    writer = _schema(SCHEMA_DIR / "telemetry-1.avsc")
    reader = copy.deepcopy(writer)
    outcome_enum = _field(reader, "outcome")["type"][1]
    outcome_enum["symbols"] = ["SUCCESS", "FAILURE"]

    problems = check_compatibility(reader, writer)

    assert len(problems) == 1
    assert problems[0].startswith("field 'outcome': ")
    assert "PARTIAL" in problems[0]


def test_enum_default_lets_old_readers_read_new_kinds() -> None:
    old = _schema(SCHEMA_DIR / "telemetry-1.avsc")
    new = copy.deepcopy(old)
    _field(new, "kind")["type"]["symbols"].append("HANDOFF")
    assert check_compatibility(old, new) == []
    del _field(old, "kind")["type"]["default"]
    problems = check_compatibility(old, new)
    assert len(problems) == 1 and "'kind'" in problems[0] and "HANDOFF" in problems[0]


def test_renamed_record_is_reported_at_the_top_level() -> None:
    writer = _schema(SCHEMA_DIR / "feedback-1.avsc")
    reader = copy.deepcopy(writer)
    reader["name"] = "Rating"
    problems = check_compatibility(reader, writer)
    assert problems == [
        "top-level record: reader name 'memstream.Rating' does not match writer name "
        "'memstream.Feedback' (and is not an alias)"
    ]


def test_transitive_policy_compares_with_every_earlier_version(tmp_path: Path) -> None:
    v1 = _schema(SCHEMA_DIR / "feedback-1.avsc")
    v2 = copy.deepcopy(v1)
    v2["fields"].append({"name": "region", "type": "string", "doc": "Region.", "default": "eu"})
    v3 = copy.deepcopy(v2)
    del _field(v3, "region")["default"]  # v3 still reads v2 data (it has region), not v1 data
    _write_versions(tmp_path, "feedback", {1: v1, 2: v2, 3: v3})
    versions = load_schema_versions(tmp_path)["feedback"]

    assert check_versions(versions, "BACKWARD") == []
    transitive = check_versions(versions, "BACKWARD_TRANSITIVE")
    assert len(transitive) == 1
    assert transitive[0].startswith("feedback v3 vs v1: ")
    assert "'region'" in transitive[0]


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(SchemaError, match="SIDEWAYS"):
        check_versions(load_schema_versions()["telemetry"], "SIDEWAYS")


def _roundtrip(
    record: dict[str, Any], writer: dict[str, Any], reader: dict[str, Any]
) -> dict[str, Any]:
    """Encode with `writer` and decode with `reader`, as a consumer on another version would."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(copy.deepcopy(writer)), record)
    buffer.seek(0)
    decoded = fastavro.schemaless_reader(
        buffer,
        fastavro.parse_schema(copy.deepcopy(writer)),
        fastavro.parse_schema(copy.deepcopy(reader)),
    )
    assert isinstance(decoded, dict)
    return decoded


TELEMETRY_EVENT: dict[str, Any] = {
    "tenant": "acme",
    "event_id": "evt-1",
    "event_time": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    "session_id": "s-1",
    "interaction_id": "i-1",
    "kind": "TOOL_CALL",
    "text": "search docs",
    "tool_name": "search",
    "outcome": "PARTIAL",
    "latency_ms": 42,
    "attributes": {"env": "test"},
}


def test_telemetry_v1_record_reads_with_v2_reader_and_gets_defaults() -> None:
    v1 = _schema(SCHEMA_DIR / "telemetry-1.avsc")
    v2 = _schema(SCHEMA_DIR / "telemetry-2.avsc")

    decoded = _roundtrip(TELEMETRY_EVENT, writer=v1, reader=v2)

    assert decoded == {**TELEMETRY_EVENT, "model": None, "token_count": None}


def test_telemetry_v2_record_reads_with_v1_reader_and_drops_new_fields() -> None:
    v1 = _schema(SCHEMA_DIR / "telemetry-1.avsc")
    v2 = _schema(SCHEMA_DIR / "telemetry-2.avsc")
    record = {**TELEMETRY_EVENT, "model": "gpt-x", "token_count": 321}

    decoded = _roundtrip(record, writer=v2, reader=v1)

    assert decoded == TELEMETRY_EVENT


MEMORY_RECORD: dict[str, Any] = {
    "tenant": "acme", "memory_id": "m-1", "event_id": "e-1",
    "event_time": datetime(2026, 12, 1, tzinfo=UTC), "session_id": "s-1", "kind": "QUERY",
    "text": "The auth service deploys on Friday.", "content_hash": "h", "embedding": b"\x00" * 8,
    "model_id": "m", "dimension": 2, "value": None, "confidence": 0.0, "occurrence_count": 1,
    "source_event_ids": ["e-1"], "merges": [], "deleted": False, "scorer_version": None,
}
SUPERSESSION = {"valid_from": None, "supersedes": None, "superseded_by": None,
                "superseded_at": None}


def test_memory_v2_only_adds_optional_supersession_fields_to_v1() -> None:
    v1 = _schema(SCHEMA_DIR / "memory-1.avsc")
    v2 = _schema(SCHEMA_DIR / "memory-2.avsc")
    names = [f["name"] for f in v1["fields"]]
    assert [f["name"] for f in v2["fields"]][: len(names)] == names
    added = v2["fields"][len(names) :]
    assert [f["name"] for f in added] == list(SUPERSESSION)
    assert all(f["default"] is None and f["type"][0] == "null" for f in added)


def test_memory_v1_record_reads_with_v2_reader_as_current() -> None:
    v1 = _schema(SCHEMA_DIR / "memory-1.avsc")
    v2 = _schema(SCHEMA_DIR / "memory-2.avsc")

    decoded = _roundtrip(MEMORY_RECORD, writer=v1, reader=v2)

    assert decoded == {**MEMORY_RECORD, **SUPERSESSION}


def test_memory_v2_superseded_record_reads_with_v1_reader_and_drops_the_relation() -> None:
    v1 = _schema(SCHEMA_DIR / "memory-1.avsc")
    v2 = _schema(SCHEMA_DIR / "memory-2.avsc")
    changed = datetime(2026, 12, 2, tzinfo=UTC)
    record = {**MEMORY_RECORD, "valid_from": datetime(2026, 12, 1, tzinfo=UTC),
              "supersedes": None, "superseded_by": "m-2", "superseded_at": changed}

    assert _roundtrip(record, writer=v2, reader=v2) == record
    assert _roundtrip(record, writer=v2, reader=v1) == MEMORY_RECORD


def test_version_gap_raises_schema_error_naming_the_subject(tmp_path: Path) -> None:
    v1 = _schema(SCHEMA_DIR / "feedback-1.avsc")
    _write_versions(tmp_path, "feedback", {1: v1, 3: v1})
    with pytest.raises(SchemaError, match=r"'feedback'.*missing \[2\]"):
        load_schema_versions(tmp_path)


def test_first_version_must_be_one(tmp_path: Path) -> None:
    _write_versions(tmp_path, "feedback", {2: _schema(SCHEMA_DIR / "feedback-1.avsc")})
    with pytest.raises(SchemaError, match=r"missing \[1\]"):
        load_schema_versions(tmp_path)


def test_invalid_json_raises_schema_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "voice-1.avsc").write_text("{not json", encoding="utf-8")
    with pytest.raises(SchemaError, match="voice-1.avsc"):
        load_schema_versions(tmp_path)


def test_invalid_avro_raises_schema_error_naming_the_file(tmp_path: Path) -> None:
    bad = {"type": "record", "name": "Broken", "fields": [{"name": "x", "type": "nosuchtype"}]}
    _write_versions(tmp_path, "broken", {1: bad})
    with pytest.raises(SchemaError, match="broken-1.avsc") as caught:
        load_schema_versions(tmp_path)
    assert isinstance(caught.value, MemstreamError)
    assert caught.value.retriable is False


def test_badly_named_file_raises_schema_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "telemetry.v1.avsc").write_text(
        (SCHEMA_DIR / "telemetry-1.avsc").read_text(encoding="utf-8"), encoding="utf-8"
    )
    with pytest.raises(SchemaError, match=r"telemetry\.v1\.avsc"):
        load_schema_versions(tmp_path)
