"""Errors of the MCP server's memory operations (their messages go back to the model)."""

from __future__ import annotations

from streams.common.exceptions import MemstreamError


class ToolInputError(MemstreamError):
    """A tool argument memstream refuses although the schema let it through."""


class TenantMismatchError(MemstreamError):
    """The MCP server and the read service map one token to different tenants."""


class NotConfiguredError(MemstreamError):
    """A setting the chosen transport needs is missing."""
