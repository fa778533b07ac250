"""Errors of the processing runtime."""

from __future__ import annotations

from streams.common.exceptions import MemstreamError


class AgentFailedError(MemstreamError):
    """Agent code raised on a batch twice and the policy is ``fail``: the worker stops."""
