"""The read service's feed, on the real broker: what the replica holds when it first
catches up (a snapshot, the log read since) is frozen out of the collector's full
collections before the service reports ready, so a recall never waits for a walk over it
(a full collection took ~100 ms at 100,000 memories; bench/RESULTS.md)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams.common.heap import is_frozen
from streams.common.settings import Settings
from streams.models.index import IndexPolicy
from streams.service.feed import ReplicaFeed
from streams.service.replica import Replica


@pytest.fixture
def unfrozen_afterwards() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen_afterwards")
def test_the_replica_is_frozen_when_the_feed_first_catches_up(provisioned: Settings) -> None:
    replica = Replica("bench-model", 8, IndexPolicy())
    held = {"s1": {"text": "loaded before ready"}}  # stands for what a snapshot loaded
    replica.summaries["acme"] = held
    feed = ReplicaFeed(provisioned, replica)
    assert not is_frozen(held)
    feed.start()
    try:
        assert feed.caught_up.wait(60), feed.failed
        assert is_frozen(held)
    finally:
        feed.stop(snapshot=False)
    assert feed.failed is None
