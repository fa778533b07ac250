"""Errors of the dataset export."""

from __future__ import annotations

from streams.common.exceptions import MemstreamError


class ExportError(MemstreamError):
    """The export cannot be made as asked (bad pinned offsets, unreadable manifest, ...)."""


class ExportStalledError(ExportError):
    """The memories topic did not reach the offsets to cover (an open transaction?)."""

    retriable = True
