"""Fault injection for crash tests: ``MEMSTREAM_FAULT_INJECT=<point>:<n>`` kills this process.

The points the runtime passes are ``after-process``, ``before-commit`` and ``after-commit``;
an agent may place its own (memorize: ``memorize-embedded``). Unset, ``fault_point`` returns
at once. Nothing else reads the variable.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import defaultdict
from collections.abc import Callable

logger = logging.getLogger(__name__)

_FAULT = os.environ.get("MEMSTREAM_FAULT_INJECT", "")
_fault_hits: dict[str, int] = defaultdict(int)


def fault_point(name: str, prepare: Callable[[], None] | None = None) -> None:
    """Crash tests only: ``MEMSTREAM_FAULT_INJECT=<point>:<n>`` kill -9s this process the
    n-th time it reaches ``<point>`` (after-process, before-commit, after-commit,
    memorize-embedded), after calling ``prepare`` (e.g. to put sent records on the broker)."""
    if not _FAULT:
        return
    point, _, nth = _FAULT.partition(":")
    if point == name:
        _fault_hits[name] += 1
        if _fault_hits[name] >= int(nth or 1):
            if prepare is not None:
                prepare()
            logger.warning("fault injection: SIGKILL at %s", name)
            os.kill(os.getpid(), signal.SIGKILL)
