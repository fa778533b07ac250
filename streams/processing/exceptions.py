"""Errors of the processing runtime."""

from __future__ import annotations

from streams.common.exceptions import MemstreamError


class AgentFailedError(MemstreamError):
    """Agent code raised on a batch twice and the policy is ``fail``: the worker stops."""


class StoreClosedError(MemstreamError):
    """An agent used the store of a partition this worker no longer owns (closed on revoke).

    Retriable: the runtime lets it end the worker rather than dead-letter good records; the
    restart rebuilds every agent from the stores it owns then.
    """

    retriable = True
