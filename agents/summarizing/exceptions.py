"""Errors of the summarizing step."""

from __future__ import annotations

from streams.common.exceptions import MemstreamError


class RewriteError(MemstreamError):
    """The optional summary rewriter (an OpenAI-compatible endpoint) failed or timed out."""
