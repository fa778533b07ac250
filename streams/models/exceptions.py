"""Errors of the model adapters: a failing model (retry); bad data or audio (dead-letter)."""

from __future__ import annotations

from streams.common.exceptions import MemstreamError


class ModelError(MemstreamError):
    """A model failed to load or to run; the input is fine, so wait and retry."""

    retriable = True


class ModelMismatchError(MemstreamError):
    """A vector's model id or dimension differs from what its reader or index expects."""


class AudioError(MemstreamError):
    """A voice note's audio cannot be transcribed; retrying never helps, so dead-letter it."""


class UndecodableAudioError(AudioError):
    """The bytes are not audio the decoder reads."""


class EmptyAudioError(AudioError):
    """No bytes, or no samples in them."""


class SilentAudioError(AudioError):
    """No frame is louder than the silence threshold."""


class AudioTooLongError(AudioError):
    """More audio than the configured maximum."""


class NoSpeechError(AudioError):
    """The model recognized no words in audible audio."""
