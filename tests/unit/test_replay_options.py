"""``memstream replay`` option checks (no broker)."""

from __future__ import annotations

import pytest

from streams.ops.replay import ReplayRefusedError, ReplayRequest


def parse(**kw: object) -> ReplayRequest:
    args: dict[str, object] = {"topics": [], "from_offsets": [], "from_timestamp": None,
                               "to_earliest": False, "to_latest": False}
    args.update(kw)
    return ReplayRequest.from_cli(**args)  # type: ignore[arg-type]


def test_offsets_and_timestamps_parse() -> None:
    req = parse(topics=["telemetry.v1"], from_offsets=["0:120", "3:7"])
    assert req.from_offsets == {0: 120, 3: 7} and req.topics == ("telemetry.v1",)
    assert parse(from_timestamp="2026-11-25T10:00:00Z").from_timestamp_ms == 1_795_600_800_000
    assert parse().from_timestamp_ms is None and not parse().to_latest


@pytest.mark.parametrize("kw", [
    {"from_offsets": ["0:1"]},  # offsets need one topic
    {"topics": ["telemetry.v1"], "from_offsets": ["x:1"]},
    {"topics": ["memories.v1"]},  # not an input of the app
    {"to_earliest": True, "to_latest": True},
    {"from_timestamp": "yesterday"},
])
def test_bad_options_are_refused_with_a_reason(kw: dict[str, object]) -> None:
    with pytest.raises(ReplayRefusedError):
        parse(**kw)
