"""The runtime around the commit protocol, on fake clients: error policy, rebalances, shutdown.

Branches:

- assignment: the stores of every (agent store, assigned partition) are opened and restored
  together, then every agent rebuilds for the owned partitions, and what it rebuilt is
  frozen out of the collector's full collections; a later assignment reuses the open stores;
- shutdown: the consumer, every store and every agent (``Agent.close``) are closed, also
  when ``run`` ends on an error;
- data errors: a record agent code keeps failing on is isolated by bisection and
  dead-lettered alone (``processing_failed``; ``invalid_data`` for a refused record,
  bisected without the retry), the rest committed exactly once, the consumer positioned
  after it all; a transient failure is retried once; ``on_processing_error=fail`` stops
  the worker (``AgentFailedError``) with nothing committed; an undecodable record is
  dead-lettered inside its batch;
- revoke between batches: the agents' rebuild after a later abort covers only the
  partitions still owned (callbacks run inside ``consume``, never during a batch);
- a rebalance while a batch is open: the broker refuses its offsets (a stale generation),
  the batch aborts, nothing reaches the stores, and the error ends ``run``.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaException, TopicPartition
from kafka_fakes import FakeConsumer, kafka_error, message
from runtime_rigs import RuntimeRig

from streams.common.exceptions import ValidationError
from streams.common.heap import is_frozen
from streams.common.settings import load_settings
from streams.processing.api import Agent, BatchContext, InputRecord, StoreAccess
from streams.processing.exceptions import AgentFailedError
from streams.processing.store import PartitionStore

RuntimeFactory = Callable[..., RuntimeRig]
TOPIC = "t.telemetry.v1"


class Echo(Agent):
    """Stores and echoes each record's text; fails on 'boom', refuses 'invalid', and fails
    once on each 'flaky'."""

    name = "echo"
    inputs = ("telemetry.v1",)
    stores = ("seen",)

    def __init__(self) -> None:
        self.rebuilds: list[list[int]] = []
        self.attempts: list[int] = []
        self.flaked: set[int] = set()
        self.closed = 0

    def rebuild(self, partitions: frozenset[int], stores: StoreAccess) -> None:
        self.rebuilds.append(sorted(partitions))

    def process(self, records: list[InputRecord], ctx: BatchContext) -> None:
        self.attempts.append(len(records))
        for record in records:
            text = record.value["text"]
            if text == "boom":
                raise ValueError("boom: always fails")
            if text == "invalid":
                raise ValidationError("text 'invalid' is refused", field="text")
            if text == "flaky" and record.offset not in self.flaked:
                self.flaked.add(record.offset)
                raise RuntimeError("flaky: fails once")
            ctx.store("seen", record.partition).put(str(record.offset), text)
            ctx.send("scored.v1", {"tenant": "acme", "text": text}, key="acme")

    def close(self) -> None:
        self.closed += 1


def _records(texts: list[str], partition: int = 0, start: int = 0) -> list[Any]:
    return [message(TOPIC, partition, start + i, json.dumps({"text": t}).encode())
            for i, t in enumerate(texts)]


def _assign(*partitions: int) -> tuple[str, list[TopicPartition]]:
    return "assign", [TopicPartition(TOPIC, p) for p in partitions]


def _outputs(rig: RuntimeRig) -> list[str]:
    return [json.loads(r.value or b"")["text"] for r in rig.producer.committed_to("t.scored.v1")]


def _letters(rig: RuntimeRig) -> list[tuple[str, int]]:
    letters = [json.loads(r.value or b"") for r in rig.producer.committed_to("t.deadletter.v1")]
    return [(d["reason_code"], d["source_offset"]) for d in letters]


def test_run_restores_on_assignment_processes_and_closes_everything(
    runtime_factory: RuntimeFactory,
) -> None:
    agent = Echo()
    consumer = FakeConsumer([_records(["a", "b"]), _records(["c"], partition=1)],
                            rebalances={0: _assign(0, 1)})
    rig = runtime_factory([agent], consumer)
    rig.run()
    assert rig.restored == [[("seen", 0), ("seen", 1)]]
    assert agent.rebuilds == [[0, 1]]
    assert _outputs(rig) == ["a", "b", "c"]
    assert rig.producer.offsets_sent == [[(TOPIC, 0, 2)], [(TOPIC, 1, 1)]]
    assert consumer.closed and agent.closed == 1 and rig.runtime.stores == {}


def test_a_later_assignment_reuses_the_open_stores(runtime_factory: RuntimeFactory) -> None:
    agent = Echo()
    consumer = FakeConsumer([], rebalances={0: _assign(0), 1: _assign(0, 1)})
    consumer.batches = [[], []]  # two empty polls, then stop
    rig = runtime_factory([agent], consumer)
    opened: list[PartitionStore] = []
    original = rig.runtime.ownership._restore

    def restore(stores: list[PartitionStore], *args: Any, **options: Any
                ) -> dict[PartitionStore, int]:
        opened.extend(stores)
        return original(stores, *args, **options)

    rig.runtime.ownership._restore = restore
    rig.run()
    assert rig.restored == [[("seen", 0)], [("seen", 0), ("seen", 1)]]
    assert opened[0] is opened[1], "the store of partition 0 was opened twice"
    assert agent.rebuilds == [[0], [0, 1]]


def test_a_record_agent_code_keeps_failing_on_is_dead_lettered_alone(
    runtime_factory: RuntimeFactory,
) -> None:
    agent = Echo()
    texts = ["a", "b", "c", "boom", "d", "e"]
    rig = runtime_factory([agent], FakeConsumer([_records(texts)], rebalances={0: _assign(0)}))
    rig.run()
    assert agent.attempts[:4] == [6, 6, 6, 3], "not retried once before the bisection"
    assert sorted(_outputs(rig)) == ["a", "b", "c", "d", "e"]
    assert _letters(rig) == [("processing_failed", 3)]
    assert rig.consumer.seeks[-1] == (TOPIC, 0, 6), "not positioned after the batch"
    sent = [o for batch in rig.producer.offsets_sent for (_t, _p, o) in batch]
    assert sent == sorted(sent), "offsets committed out of order"


def test_a_refused_record_is_bisected_at_once_and_dead_lettered_as_invalid_data(
    runtime_factory: RuntimeFactory,
) -> None:
    agent = Echo()
    texts = ["a", "invalid", "b", "c"]
    rig = runtime_factory([agent], FakeConsumer([_records(texts)], rebalances={0: _assign(0)}))
    rig.run()
    # Bisection starts with the whole batch (a second attempt), then halves: no retry first.
    assert agent.attempts[:3] == [4, 4, 2], "a data error was retried whole"
    assert sorted(_outputs(rig)) == ["a", "b", "c"]
    assert _letters(rig) == [("invalid_data", 1)]


def test_a_transient_failure_is_retried_once_and_nothing_is_dead_lettered(
    runtime_factory: RuntimeFactory,
) -> None:
    agent = Echo()
    rig = runtime_factory([agent], FakeConsumer([_records(["a", "flaky", "b"])],
                                                rebalances={0: _assign(0)}))
    rig.run()
    assert agent.attempts == [3, 3]
    assert _outputs(rig) == ["a", "flaky", "b"] and _letters(rig) == []


def test_processing_error_policy_fail_stops_the_worker_with_nothing_committed(
    runtime_factory: RuntimeFactory, tmp_path: Any
) -> None:
    agent = Echo()
    settings = load_settings(data_dir=tmp_path, metrics_port=0, app_id="app", topic_prefix="t.",
                             partitions=4, on_processing_error="fail")
    rig = runtime_factory([agent], FakeConsumer([_records(["a", "boom"])],
                                                rebalances={0: _assign(0)}), settings=settings)
    with pytest.raises(AgentFailedError, match="echo raised ValueError"):
        rig.run()
    assert rig.producer.committed == []
    assert rig.consumer.closed and agent.closed == 1


def test_an_undecodable_record_is_dead_lettered_and_its_batch_commits(
    runtime_factory: RuntimeFactory,
) -> None:
    batch = _records(["a"]) + [message(TOPIC, 0, 1, b"\xff\x00junk")] + _records(["b"], start=2)
    rig = runtime_factory([Echo()], FakeConsumer([batch], rebalances={0: _assign(0)}))
    rig.run()
    assert _outputs(rig) == ["a", "b"]
    assert _letters(rig) == [("undecodable", 1)]
    assert rig.producer.offsets_sent == [[(TOPIC, 0, 3)]], "not one transaction"


def test_after_a_revoke_the_agents_rebuild_only_what_is_still_owned(
    runtime_factory: RuntimeFactory,
) -> None:
    agent = Echo()
    revoke = ("revoke", [TopicPartition(TOPIC, 1)])
    consumer = FakeConsumer([_records(["a"], partition=1), _records(["flaky"])],
                            rebalances={0: _assign(0, 1), 1: revoke})
    rig = runtime_factory([agent], consumer)
    rig.run()
    # The retry of the flaky batch aborted once: its rebuild sees partition 0 alone.
    assert agent.rebuilds == [[0, 1], [0]]
    assert _outputs(rig) == ["a", "flaky"]


def test_what_the_agents_rebuilt_is_frozen_out_of_full_collections(
    runtime_factory: RuntimeFactory,
) -> None:
    agent = Echo()
    rig = runtime_factory([agent], FakeConsumer([_records(["a"])], rebalances={0: _assign(0)}))
    try:
        rig.run()
        assert agent.rebuilds == [[0]]
        assert is_frozen(agent.rebuilds[0]), "the rebuilt state is walked by every full collection"
    finally:
        gc.unfreeze()


def test_a_rebalance_during_a_batch_fences_its_offsets_and_nothing_is_applied(
    runtime_factory: RuntimeFactory, tmp_path: Any
) -> None:
    agent = Echo()
    stale = kafka_error("abortable")
    rig = runtime_factory([agent], FakeConsumer([_records(["a", "b"], start=5)],
                                                rebalances={0: _assign(0)}),
                          fail={"send_offsets_to_transaction": stale})
    with pytest.raises(KafkaException) as raised:
        rig.run()
    assert raised.value is stale
    assert rig.producer.calls[-2:] == ["abort_transaction", "poll(0)"]
    assert rig.consumer.seeks == [(TOPIC, 0, 5)]
    assert rig.producer.committed == []
    assert rig.consumer.closed and agent.closed == 1
    path = rig.runtime.settings.worker_data_dir / "seen" / "0"
    store = PartitionStore("seen", path, "cl", 0, lambda *_: None)
    try:
        assert dict(store.committed_items()) == {} and store.checkpoint == 0
    finally:
        store.close()
