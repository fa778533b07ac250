"""An agent's own batch limit (``Agent.max_records_per_batch``), on fake clients.

The runtime ends a batch where a limiting agent has its limit: from that agent's first
record left out, the record's partition is left out whole and rewound to it (read again for
the next batch), while the records of other partitions and other agents stay in the batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from confluent_kafka import Message, TopicPartition
from kafka_fakes import FakeConsumer, message
from runtime_rigs import RuntimeRig

from streams.processing.api import Agent, BatchContext, InputRecord

RuntimeFactory = Callable[..., RuntimeRig]
VOICE, TEXT = "t.voice.v1", "t.telemetry.v1"


class Seen(Agent):
    """Records the (partition, offset) of every record of each batch it gets."""

    stores = ()

    def __init__(self, name: str, base: str, limit: int | None) -> None:
        self.name = name
        self.inputs = (base,)
        self.max_records_per_batch = limit
        self.batches: list[list[tuple[int, int]]] = []

    def process(self, records: list[InputRecord], ctx: BatchContext) -> None:
        self.batches.append([(r.partition, r.offset) for r in records])


def _msg(topic: str, partition: int, at: int) -> Message:
    return message(topic, partition, at, json.dumps({"text": f"{topic}@{at}"}).encode())


def _assign() -> tuple[str, list[TopicPartition]]:
    return "assign", [TopicPartition(t, p) for t in (VOICE, TEXT) for p in (0, 1)]


def test_a_batch_ends_at_an_agents_limit_and_the_rest_is_read_again(
    runtime_factory: RuntimeFactory,
) -> None:
    voice, text = Seen("voice", "voice.v1", 2), Seen("text", "telemetry.v1", None)
    first = [_msg(VOICE, 0, 0), _msg(TEXT, 0, 0), _msg(VOICE, 0, 1), _msg(TEXT, 1, 0),
             _msg(VOICE, 1, 0), _msg(TEXT, 0, 1), _msg(VOICE, 0, 2), _msg(VOICE, 1, 1),
             _msg(VOICE, 0, 3), _msg(TEXT, 1, 1)]
    again = [_msg(VOICE, 1, 0), _msg(VOICE, 0, 2), _msg(VOICE, 1, 1), _msg(VOICE, 0, 3)]
    consumer = FakeConsumer([first, again, again[2:]], rebalances={0: _assign()})
    rig = runtime_factory([voice, text], consumer)
    rig.run()
    # Two voice notes per batch; the text records all go in the first batch.
    assert voice.batches == [[(0, 0), (0, 1)], [(1, 0), (0, 2)], [(1, 1), (0, 3)]]
    assert text.batches == [[(0, 0), (1, 0), (0, 1), (1, 1)]]
    # Each partition left out is rewound once, to its first record left out.
    assert consumer.seeks == [(VOICE, 1, 0), (VOICE, 0, 2), (VOICE, 1, 1), (VOICE, 0, 3)]
    assert rig.producer.offsets_sent[0] == [(VOICE, 0, 2), (TEXT, 0, 2), (TEXT, 1, 2)]


def test_without_a_limiting_agent_the_batch_is_taken_whole(
    runtime_factory: RuntimeFactory,
) -> None:
    text = Seen("text", "telemetry.v1", None)
    batch = [_msg(TEXT, p, at) for at in range(5) for p in (0, 1)]
    consumer = FakeConsumer([batch], rebalances={0: _assign()})
    runtime_factory([text], consumer).run()
    assert len(text.batches) == 1 and len(text.batches[0]) == 10
    assert consumer.seeks == []


def test_a_limit_of_one_takes_one_record_a_batch(runtime_factory: RuntimeFactory) -> None:
    voice = Seen("voice", "voice.v1", 1)
    batch = [_msg(VOICE, 0, 0), _msg(VOICE, 0, 1), _msg(VOICE, 0, 2)]
    consumer = FakeConsumer([batch, batch[1:], batch[2:]], rebalances={0: _assign()})
    runtime_factory([voice], consumer).run()
    assert voice.batches == [[(0, 0)], [(0, 1)], [(0, 2)]]
    assert consumer.seeks == [(VOICE, 0, 1), (VOICE, 0, 2)]


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused_before_anything_runs(
    runtime_factory: RuntimeFactory, limit: int
) -> None:
    with pytest.raises(ValueError, match=f"agent voice: max_records_per_batch must be >= 1 "
                                         f"or None, got {limit}"):
        runtime_factory([Seen("voice", "voice.v1", limit)], FakeConsumer([]))
