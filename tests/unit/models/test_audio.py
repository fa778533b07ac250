"""Voice-note decoding and the checks made before the model sees a clip."""

from __future__ import annotations

import numpy as np
import pytest

from bench.speech import reencode, wav_bytes
from streams.models.audio import SAMPLE_RATE, Clip, check_audible, decode_clip, loudest_frame_dbfs
from streams.models.exceptions import (
    AudioTooLongError,
    EmptyAudioError,
    SilentAudioError,
    UndecodableAudioError,
)


def tone(seconds: float, rate: int, amplitude: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [8_000, 16_000, 44_100])
def test_wav_is_resampled_to_16k_mono_with_its_duration(rate: int) -> None:
    clip = decode_clip(wav_bytes(tone(2.0, rate), rate), max_seconds=10)
    assert clip.samples.dtype == np.float32
    assert clip.seconds == pytest.approx(2.0, abs=0.01)
    assert 0.4 < float(np.max(np.abs(clip.samples))) <= 0.51


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3"])
def test_compressed_formats_decode(fmt: str) -> None:
    encoded = reencode(wav_bytes(tone(1.5, 16_000), 16_000), fmt)
    clip = decode_clip(encoded, max_seconds=10, codec=fmt)
    assert clip.seconds == pytest.approx(1.5, abs=0.1)


def test_garbage_is_undecodable_and_names_codec_and_size() -> None:
    with pytest.raises(UndecodableAudioError, match=r"'ogg', 15 bytes"):
        decode_clip(b"not audio at al", max_seconds=10, codec="ogg")


def test_no_bytes_and_no_samples_are_empty() -> None:
    with pytest.raises(EmptyAudioError, match="is empty"):
        decode_clip(b"", max_seconds=10, codec="wav")
    with pytest.raises(EmptyAudioError, match="no samples"):
        decode_clip(wav_bytes(np.zeros(0, np.float32), 16_000), max_seconds=10)


def test_over_long_audio_stops_decoding_at_the_limit() -> None:
    with pytest.raises(AudioTooLongError, match="over 1 s"):
        decode_clip(wav_bytes(tone(3.0, 16_000), 16_000), max_seconds=1)
    assert decode_clip(wav_bytes(tone(0.9, 16_000), 16_000), max_seconds=1).seconds < 1


def test_silence_is_refused_and_quiet_speech_level_is_not() -> None:
    with pytest.raises(SilentAudioError, match=r"-inf dBFS"):
        check_audible(Clip(np.zeros(SAMPLE_RATE, np.float32)), silence_dbfs=-50)
    hiss = Clip(np.random.default_rng(1).normal(0, 1e-4, SAMPLE_RATE).astype(np.float32))
    with pytest.raises(SilentAudioError):
        check_audible(hiss, silence_dbfs=-50)
    # one loud frame in a second of silence is enough: the loudest frame decides
    quiet = np.zeros(SAMPLE_RATE, np.float32)
    quiet[8000:8480] = tone(0.03, SAMPLE_RATE, amplitude=0.05)
    check_audible(Clip(quiet), silence_dbfs=-50)


def test_loudness_of_a_full_scale_sine_is_minus_3_dbfs() -> None:
    full_scale = tone(1.0, SAMPLE_RATE, amplitude=1.0)
    assert loudest_frame_dbfs(full_scale) == pytest.approx(-3.01, abs=0.05)
    assert loudest_frame_dbfs(np.zeros(10, np.float32)) == float("-inf")
