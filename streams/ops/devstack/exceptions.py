"""Errors of the local dev stack."""

from __future__ import annotations

from streams.common.exceptions import MemstreamError


class DevStackError(MemstreamError):
    """The local stack cannot be installed, started or stopped; the message says why."""
