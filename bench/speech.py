"""Known speech for tests and the transcription benchmark: espeak-ng synthesis, re-encoding
to the voice-note formats, and word error rate against the spoken text."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import wave

import numpy as np

# (container format, audio codec, file suffix / voice.v1 codec)
FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("wav", "pcm_s16le"),
    "flac": ("flac", "flac"),
    "ogg": ("ogg", "libopus"),
    "mp3": ("mp3", "libmp3lame"),
}


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` binary is installed (Debian: ``apt-get install espeak-ng``)."""
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, *, voice: str = "en-us", words_per_minute: int = 165) -> bytes:
    """WAV bytes (22.05 kHz mono) of espeak-ng speaking ``text``; no shell is involved."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise FileNotFoundError("espeak-ng is not installed (apt-get install espeak-ng)")
    done = subprocess.run(  # fixed argv, the text is one argument: no shell
        [binary, "-v", voice, "-s", str(words_per_minute), "--stdout", text],
        check=True, capture_output=True, timeout=60,
    )
    return done.stdout


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """16-bit mono WAV of float samples in [-1, 1]."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


def reencode(audio: bytes, fmt: str) -> bytes:
    """``audio`` (any format FFmpeg reads) re-encoded as ``fmt`` (wav, flac, ogg=Opus, mp3)."""
    import av

    container_format, codec = FORMATS[fmt]
    rate = 48_000 if codec == "libopus" else 16_000
    out = io.BytesIO()
    with av.open(io.BytesIO(audio)) as src, av.open(out, "w", format=container_format) as dst:
        stream = dst.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(
            format=stream.codec_context.codec.audio_formats[0].name, layout="mono", rate=rate
        )
        for frame in src.decode(audio=0):
            for piece in resampler.resample(frame):
                dst.mux(stream.encode(piece))
        for piece in resampler.resample(None):
            dst.mux(stream.encode(piece))
        dst.mux(stream.encode(None))
    return out.getvalue()


_NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve").split()


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation, small numbers spelled out: what WER compares."""
    words = re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))
    return [_NUMBERS[int(w)] if w.isdigit() and int(w) < len(_NUMBERS) else w for w in words]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by edit distance."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1] / len(ref)


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    """Word error rate over several (reference, hypothesis) pairs, weighted by length."""
    errors = sum(word_error_rate(r, h) * len(normalize_words(r)) for r, h in pairs)
    words = sum(len(normalize_words(r)) for r, _ in pairs)
    return errors / words if words else 0.0


# Sentences a voice note might hold: each names a thing worth remembering.
SENTENCES = (
    "Remember that the quarterly billing report is due every Monday morning.",
    "The staging database password rotates on the first day of each month.",
    "Please call the support team before you restart the payment service.",
    "Our largest customer wants the new dashboard delivered by next Friday.",
    "The backup job failed last night because the disk was full.",
    "Move the weekly planning meeting to Thursday afternoon at three.",
    "The search index should be rebuilt after every major release.",
    "Alice owns the mobile app and Bob owns the web client.",
)
