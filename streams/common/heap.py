"""CPython's garbage collector in a long-running process: its start-up heap frozen, and
young collections sized for a worker's batches.

A worker loads its models and rebuilds its indexes, then allocates short-lived objects per
batch. A full collection walks every object the collector tracks: ~25 ms on a worker's
start-up heap, ~100 ms on a read replica of 100,000 memories (``bench.heap``). Frozen
(``gc.freeze``), those objects are skipped. Reference counting still frees a frozen object
that dies; only garbage *cycles* among frozen objects wait for the next ``freeze_heap``,
which first unfreezes and collects them.

A batch keeps its decoded records alive while it runs. At CPython's default of a young
collection every 700 allocations, a batch of 1,024 records ran 13 young collections, which
walked them and promoted them towards full collections: the collector took ~9 µs of the
worker's CPU per event; ~1.5 µs with the heap frozen and a young collection every 10,000
allocations (bench/RESULTS.md, "The collector").
"""

from __future__ import annotations

import gc
import logging
import time

logger = logging.getLogger(__name__)

YOUNG_COLLECTION_THRESHOLD = 10_000


def freeze_heap() -> None:
    """Collect everything (frozen objects included), then freeze what is left alive."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    logger.debug("heap frozen: %d objects in %.3fs", gc.get_freeze_count(),
                 time.perf_counter() - started)


def batch_collector() -> None:
    """A young collection every ``YOUNG_COLLECTION_THRESHOLD`` allocations (process-wide);
    the older generations keep their ratios."""
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


def is_frozen(obj: object) -> bool:
    """Whether ``obj`` is frozen: tracked by the collector but in none of its generations
    (walks every tracked object: for checks, not for a hot path)."""
    return gc.is_tracked(obj) and not any(o is obj for o in gc.get_objects())
