"""`memstream produce` on bad lines: report each, send the rest, end with the counts."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

from streams.common.reader import read_topic
from streams.common.settings import Settings
from tests.integration.harness import REPO, memstream_env


def _good(i: int, tenant: str) -> str:
    return json.dumps({"tenant": tenant, "session_id": "s", "interaction_id": f"i{i}",
                       "kind": "QUERY", "text": f"How do I rotate key {i}?",
                       "event_id": f"good-{i}", "event_time": "2026-11-01T09:00:00+00:00"})


def _produce(settings: Settings, topic: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", "produce", topic, str(path)],
                          env=memstream_env(settings), cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_produce_reports_each_bad_line_sends_the_rest_and_exits_non_zero(
    provisioned: Settings, tmp_path: Path
) -> None:
    base = json.loads(_good(0, "acme"))
    lines = [
        _good(1, "acme"),                                                    # 1
        json.dumps({**base, "event_time": "yesterday-ish"}),                  # 2 bad time
        "[1, 2, 3]",                                                          # 3 not an object
        '{"tenant": "acme", "text": ',                                        # 4 not JSON
        _good(5, "globex"),                                                   # 5
        json.dumps({**base, "tenant": ""}),                                   # 6 empty tenant
        json.dumps({**base, "text": "?!..."}),                                # 7 empty text
        json.dumps({**base, "event_time": "2026-11-01T09:00:00"}),            # 8 naive time
        json.dumps({**base, "text": "\ud800 lone"}),                          # 9 lone surrogate
        json.dumps({**base, "event_time": "2999-01-01T00:00:00+00:00"}),      # 10 far future
        _good(11, "initech"),                                                 # 11
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = _produce(provisioned, "telemetry.v1", path)
    assert done.returncode == 1, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "sent 3, rejected 8"
    assert "Traceback" not in done.stderr
    reported = [line for line in done.stderr.splitlines() if line.startswith("line ")]
    assert [r.split(":")[0] for r in reported] == [
        f"line {n}" for n in (2, 3, 4, 6, 7, 8, 9, 10)]
    by_line = {r.split(":")[0]: r for r in reported}
    assert by_line["line 2"].startswith("line 2: event_time: is not an ISO-8601 time")
    assert by_line["line 3"] == "line 3: <line>: must be a JSON object, got list"
    assert by_line["line 4"].startswith("line 4: <line>: not JSON")
    assert by_line["line 6"].startswith("line 6: tenant: ") and "must not be empty" in by_line[
        "line 6"]
    assert by_line["line 7"].startswith("line 7: text: ") and "empty after normalization" in (
        by_line["line 7"])
    assert by_line["line 8"].startswith("line 8: event_time: ") and "timezone" in by_line["line 8"]
    assert by_line["line 9"].startswith("line 9: text: ") and "surrogate" in by_line["line 9"]
    assert by_line["line 10"].startswith("line 10: event_time: ") and "ahead" in by_line["line 10"]
    sent = sorted(r.value["event_id"] for r in read_topic(provisioned, "telemetry.v1"))
    assert sent == ["good-1", "good-11", "good-5"]


def test_produce_bad_base64_is_reported_and_the_next_note_is_sent(
    provisioned: Settings, tmp_path: Path
) -> None:
    note = {"tenant": "acme", "session_id": "s", "codec": "wav", "event_id": "v-ok",
            "event_time": "2026-11-01T09:00:00+00:00",
            "audio_b64": base64.b64encode(b"RIFF....WAVE").decode()}
    lines = [json.dumps({**note, "event_id": "v-bad", "audio_b64": "not base64 !!"}),
             json.dumps({**note, "event_id": "v-int", "audio_b64": 12}), json.dumps(note)]
    path = tmp_path / "voice.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = _produce(provisioned, "voice.v1", path)
    assert done.returncode == 1, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "sent 1, rejected 2"
    assert "line 1: audio_b64: is not valid base64" in done.stderr
    assert "line 2: audio_b64: must be a base64 string, got int" in done.stderr
    assert [r.value["event_id"] for r in read_topic(provisioned, "voice.v1")] == ["v-ok"]


def test_produce_to_an_unknown_topic_names_the_known_ones(
    stack_settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(_good(1, "acme") + "\n", encoding="utf-8")
    done = _produce(stack_settings, "telemetry.v9", path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("topic: unknown topic 'telemetry.v9'")
    assert "telemetry.v1" in done.stderr
