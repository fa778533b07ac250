"""The transcribe agent: voice notes in, transcripts out; unusable audio to deadletter.v1.

A batch's clips are decoded and transcribed concurrently in a bounded thread pool (the
model releases the GIL), then sent in input order inside the batch's transaction, so a
transcript commits with the voice note's offset or not at all. Nothing is produced
until the whole batch is transcribed, which keeps the broker-side transaction short.
The transcript keeps the voice note's event id, so score and memorize name it as source.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from streams.common.codec import to_millis
from streams.common.exceptions import ValidationError
from streams.common.observability import WorkerMetrics
from streams.common.validation import check_ids, check_tenant
from streams.models.audio import check_audible, decode_clip
from streams.models.exceptions import (
    AudioError,
    AudioTooLongError,
    EmptyAudioError,
    NoSpeechError,
    SilentAudioError,
    UndecodableAudioError,
)
from streams.models.transcriber import Transcriber, Transcription
from streams.processing.api import (
    Agent,
    BatchContext,
    DeadLetterReason,
    InputRecord,
    reason_for,
)

logger = logging.getLogger(__name__)

REASONS: dict[type[AudioError], DeadLetterReason] = {
    UndecodableAudioError: DeadLetterReason.UNDECODABLE_AUDIO,
    EmptyAudioError: DeadLetterReason.EMPTY_AUDIO,
    SilentAudioError: DeadLetterReason.SILENT_AUDIO,
    AudioTooLongError: DeadLetterReason.AUDIO_TOO_LONG,
    NoSpeechError: DeadLetterReason.NO_SPEECH,
}


@dataclass(frozen=True)
class ClipResult:
    """One voice note's outcome: a transcription, or the audio error that stopped it."""

    transcription: Transcription | None
    audio_seconds: float
    processing_seconds: float
    error: AudioError | None = None


def transcribe_clip(
    transcriber: Transcriber,
    audio: bytes,
    *,
    codec: str,
    max_seconds: float,
    silence_dbfs: float,
    clock: Callable[[], float] = time.perf_counter,
) -> ClipResult:
    """Decode, check and transcribe one note; audio problems come back as ``error``.

    A model failure (``ModelError``) is raised: the note is fine, the batch is retried.
    """
    started = clock()
    seconds = 0.0
    try:
        clip = decode_clip(audio, max_seconds=max_seconds, codec=codec)
        seconds = clip.seconds
        check_audible(clip, silence_dbfs=silence_dbfs)
        result = transcriber.transcribe(clip.samples)
        if not result.text.strip():
            raise NoSpeechError(
                f"transcribe: model {transcriber.model_id!r} recognized no words in "
                f"{seconds:.1f} s of audible audio"
            )
    except AudioError as exc:
        return ClipResult(None, seconds, clock() - started, exc)
    return ClipResult(result, seconds, clock() - started)


def transcript_record(
    note: dict[str, Any], result: ClipResult, model_id: str
) -> dict[str, Any]:
    """The ``transcripts.v1`` record of a voice note and its transcription."""
    t = result.transcription
    if t is None:
        raise ValueError(f"voice note {note['event_id']} has no transcription: {result.error}")
    return {
        "tenant": note["tenant"],
        # The voice note's id: re-transcribing it (a replay) scores and memorizes it once.
        "event_id": note["event_id"],
        "event_time": to_millis(note["event_time"]),
        "session_id": note["session_id"],
        "interaction_id": note.get("interaction_id"),
        "source_event_id": note["event_id"],
        "text": t.text,
        "language": t.language,
        "segments": [
            {"start_s": s.start_s, "end_s": s.end_s, "text": s.text} for s in t.segments
        ],
        "model_id": model_id,
        "audio_seconds": round(result.audio_seconds, 3),
        "processing_seconds": round(result.processing_seconds, 3),
    }


class TranscribeAgent(Agent):
    """Transcribes voice notes with one model per worker and a bounded pool per batch.

    No state to rebuild: a transcript depends on its voice note alone.
    """

    name = "transcribe"
    inputs = ("voice.v1",)

    def __init__(
        self,
        transcriber: Transcriber,
        *,
        concurrency: int,
        max_seconds: float,
        silence_dbfs: float,
        metrics: WorkerMetrics,
        max_records_per_batch: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_records_per_batch is not None and max_records_per_batch < 1:
            raise ValueError(f"max_records_per_batch must be >= 1, got {max_records_per_batch}")
        self.max_records_per_batch = max_records_per_batch
        self.transcriber = transcriber
        self.max_seconds = max_seconds
        self.silence_dbfs = silence_dbfs
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="transcribe")

    def process(self, records: list[InputRecord], ctx: BatchContext) -> None:
        """Transcribe the batch's notes concurrently, then send or dead-letter in input order."""
        records = [r for r in records if self._acceptable(r, ctx)]
        futures = [
            self._pool.submit(
                transcribe_clip,
                self.transcriber,
                r.value["audio"],
                codec=r.value["codec"],
                max_seconds=self.max_seconds,
                silence_dbfs=self.silence_dbfs,
            )
            for r in records
        ]
        wait(futures)  # all settled before a ModelError aborts the batch (and it is retried)
        results = [f.result() for f in futures]
        for record, result in zip(records, results, strict=True):
            note = record.value
            if result.error is not None:
                reason = REASONS.get(type(result.error), DeadLetterReason.PROCESSING_FAILED)
                self.metrics.transcribe_errors.labels(reason.value).inc()
                ctx.dead_letter(record, reason, str(result.error), tenant=note["tenant"])
                continue
            self.metrics.transcribe_seconds.observe(result.processing_seconds)
            self.metrics.audio_seconds.observe(result.audio_seconds)
            ctx.send(
                "transcripts.v1",
                transcript_record(note, result, self.transcriber.model_id),
                key=note["session_id"],
            )
            logger.debug(
                "transcribed %s[%d]@%d: %.1f s of audio in %.2f s",
                record.topic, record.partition, record.offset,
                result.audio_seconds, result.processing_seconds,
            )

    @staticmethod
    def _acceptable(record: InputRecord, ctx: BatchContext) -> bool:
        """The SDK's own check (a tenant or id it would refuse), before any audio is decoded."""
        try:
            check_tenant(record.value["tenant"], where=record.topic)
            check_ids(record.value, where=record.topic)
        except ValidationError as exc:
            ctx.dead_letter(record, reason_for(exc), str(exc))
            return False
        return True

    def close(self) -> None:
        """Stop the pool's threads."""
        self._pool.shutdown(wait=True)
