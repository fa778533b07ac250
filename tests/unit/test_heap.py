"""freeze_heap: what is alive is frozen; a cycle frozen and dropped later is collected by the
next freeze_heap (it unfreezes first), never kept for the life of the process.
batch_collector: young collections every 10,000 allocations, older ratios kept."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.common.heap import YOUNG_COLLECTION_THRESHOLD, batch_collector, freeze_heap, is_frozen


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def _unfrozen_afterwards() -> Iterator[None]:
    yield
    gc.unfreeze()


def _cycle() -> tuple[Node, weakref.ref[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(b)


def test_what_is_alive_is_frozen_and_what_comes_after_is_not() -> None:
    before = Node()
    assert not is_frozen(before)
    freeze_heap()
    after = Node()
    assert is_frozen(before) and not is_frozen(after)
    assert gc.get_freeze_count() > 0


def test_a_frozen_cycle_dropped_later_is_collected_by_the_next_freeze() -> None:
    head, probe = _cycle()
    freeze_heap()
    assert is_frozen(head)
    del head
    gc.collect()
    assert probe() is not None, "a frozen cycle is out of reach of gc.collect"
    freeze_heap()
    assert probe() is None, "freeze_heap must unfreeze and collect before it freezes"


def test_garbage_cycles_are_collected_not_frozen() -> None:
    head, probe = _cycle()
    del head
    freeze_heap()
    assert probe() is None


def test_batch_collector_sets_young_collections_and_keeps_the_older_ratios() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 7, 9)
        batch_collector()
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, 7, 9)
    finally:
        gc.set_threshold(*saved)
