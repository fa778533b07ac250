"""Voice-note audio: bounded decoding to 16 kHz mono float32 and the checks done before a model.

Decoding goes through PyAV (FFmpeg), the decoder faster-whisper itself uses, so whatever
container and codec it reads (WAV, FLAC, OGG/Opus, MP3, ...) works. Unlike
``faster_whisper.decode_audio`` it stops as soon as the audio passes the length limit: a
16 MiB Opus file at 6 kbit/s holds hours of speech, which must not be decoded whole just
to be refused.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from streams.models.exceptions import (
    AudioError,
    AudioTooLongError,
    EmptyAudioError,
    SilentAudioError,
    UndecodableAudioError,
)

SAMPLE_RATE = 16_000  # what Whisper models take
_FRAME_S = 0.03  # loudness is measured over 30 ms frames


@dataclass(frozen=True)
class Clip:
    """Decoded audio: mono float32 samples in [-1, 1] at ``SAMPLE_RATE``."""

    samples: np.ndarray

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return len(self.samples) / SAMPLE_RATE


def decode_clip(data: bytes, *, max_seconds: float, codec: str = "?") -> Clip:
    """Decode encoded audio bytes; raise an ``AudioError`` subclass naming why it is unusable.

    Raises:
        EmptyAudioError: no bytes, or no audio samples in them.
        UndecodableAudioError: FFmpeg cannot read the bytes as audio.
        AudioTooLongError: more than ``max_seconds`` of audio (decoding stops there).
    """
    if not data:
        raise EmptyAudioError(f"voice.v1: field 'audio' is empty (codec {codec!r})")
    limit = int(max_seconds * SAMPLE_RATE)
    try:
        chunks, total, invalid = _decode_samples(data, limit, max_seconds, codec)
    except AudioError:
        raise
    except Exception as exc:
        # FFmpeg's errors, and anything else a hostile file provokes in the decoder: a
        # poison note is dead-lettered, never allowed to crash-loop the worker.
        raise UndecodableAudioError(
            f"voice.v1: field 'audio' ({codec!r}, {len(data)} bytes) cannot be decoded: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if total > limit:
        raise AudioTooLongError(
            f"voice.v1: audio is {total / SAMPLE_RATE:.1f} s, over the limit of {max_seconds:g} s"
        )
    if total == 0 and invalid:
        raise UndecodableAudioError(
            f"voice.v1: field 'audio' ({codec!r}, {len(data)} bytes): all {invalid} packets "
            "are invalid"
        )
    if total == 0:
        raise EmptyAudioError(
            f"voice.v1: field 'audio' ({codec!r}, {len(data)} bytes) decodes to no samples"
        )
    samples = np.concatenate(chunks).astype(np.float32) / 32768.0
    return Clip(samples)


def _decode_samples(
    data: bytes, limit: int, max_seconds: float, codec: str
) -> tuple[list[np.ndarray], int, int]:
    """16 kHz mono s16 chunks, their sample count, and how many packets were invalid."""
    import av  # PyAV ships with faster-whisper

    chunks: list[np.ndarray] = []
    total = invalid = 0
    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise UndecodableAudioError(
                f"voice.v1: field 'audio' ({codec!r}, {len(data)} bytes) has no audio stream"
            )
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for packet in container.demux(audio=0):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                invalid += 1  # skipped, as faster-whisper does
                continue
            for frame in frames:
                for out in resampler.resample(frame):
                    total += _append(chunks, out)
            if total > limit:
                raise AudioTooLongError(
                    f"voice.v1: audio is over {max_seconds:g} s (the limit, "
                    "MEMSTREAM_VOICE_MAX_SECONDS); decoding stopped there"
                )
        for out in resampler.resample(None):  # flush the resampler
            total += _append(chunks, out)
    return chunks, total, invalid


def _append(chunks: list[np.ndarray], frame: object) -> int:
    array = frame.to_ndarray().reshape(-1)  # type: ignore[attr-defined]
    chunks.append(array)
    return int(array.shape[0])


def loudest_frame_dbfs(samples: np.ndarray) -> float:
    """The RMS level of the loudest 30 ms frame, in dB relative to full scale (-inf: zeros)."""
    frame = max(1, int(_FRAME_S * SAMPLE_RATE))
    usable = len(samples) // frame * frame
    if usable == 0:
        frames = samples.reshape(1, -1)
    else:
        frames = samples[:usable].reshape(-1, frame)
    rms = float(np.sqrt(np.max(np.mean(np.square(frames, dtype=np.float64), axis=1))))
    return float("-inf") if rms == 0.0 else 20.0 * float(np.log10(rms))


def check_audible(clip: Clip, *, silence_dbfs: float) -> None:
    """Raise ``SilentAudioError`` when no 30 ms frame is louder than ``silence_dbfs``.

    Whisper invents text for silence ("Thank you.", "you"), so silent notes never reach it.
    """
    level = loudest_frame_dbfs(clip.samples)
    if level < silence_dbfs:
        shown = "-inf" if level == float("-inf") else f"{level:.1f}"
        raise SilentAudioError(
            f"voice.v1: audio is silent: loudest 30 ms frame {shown} dBFS, below the "
            f"threshold of {silence_dbfs:g} dBFS in {clip.seconds:.1f} s"
        )
