"""Errors of the model adapters: a failing model (retry) or another model's data (don't)."""

from __future__ import annotations

from streams.exceptions import MemstreamError


class ModelError(MemstreamError):
    """A model failed to load or to run; the input is fine, so wait and retry."""

    retriable = True


class ModelMismatchError(MemstreamError):
    """A vector's model id or dimension differs from what its reader or index expects."""
