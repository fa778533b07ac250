"""Dead letters keep the original bytes, the reason and the source coordinates."""

from __future__ import annotations

from streams.common.registry import latest_schema
from streams.common.validation import validate_record
from streams.processing.deadletter import DeadLetterReason, SourceCoordinates, dead_letter


def test_dead_letter_matches_schema_and_keeps_original_bytes() -> None:
    source = SourceCoordinates("telemetry.v1", 3, 42, b"s1", b"\x00garbage")
    record = dead_letter(source, agent="score", reason=DeadLetterReason.UNDECODABLE,
                         detail="magic byte 17")
    checked = validate_record(latest_schema("deadletter"), record, where="deadletter.v1",
                              limits={})
    assert checked["original_value"] == b"\x00garbage"
    assert (checked["source_topic"], checked["source_partition"], checked["source_offset"]) == (
        "telemetry.v1", 3, 42)
    assert checked["reason_code"] == "undecodable" and checked["tenant"] == "unknown"


def test_same_source_gets_same_id_and_other_offsets_do_not() -> None:
    a = SourceCoordinates("telemetry.v1", 0, 1, None, b"x")
    b = SourceCoordinates("telemetry.v1", 0, 2, None, b"x")
    first = dead_letter(a, agent="score", reason=DeadLetterReason.EMPTY_TEXT, detail="")
    again = dead_letter(a, agent="score", reason=DeadLetterReason.EMPTY_TEXT, detail="")
    other = dead_letter(b, agent="score", reason=DeadLetterReason.EMPTY_TEXT, detail="")
    assert first["event_id"] == again["event_id"] != other["event_id"]
