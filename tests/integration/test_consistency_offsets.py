"""The consistency gate's broker reads against the real broker, with a transaction left
open: the records of a transaction whose marker has not reached a partition yet still
count as "to be applied"."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from confluent_kafka import Producer

from streams.common.settings import Settings
from streams.service.consistency import ConsistencyGate, KafkaOffsets
from streams.service.replica import MEMORIES


def _delivered(offsets: list[int]) -> Any:
    def on_delivery(err: Any, msg: Any) -> None:
        assert err is None, err
        offsets.append(msg.offset())
    return on_delivery


def test_end_counts_an_open_transactions_records_and_the_gate_waits_for_them(
    provisioned: Settings,
) -> None:
    topic = provisioned.topic(MEMORIES)
    producer = Producer({**provisioned.kafka_client_config(), "log_level": 3,
                         "transactional.id": f"pytest-gate-{uuid.uuid4()}"})
    producer.init_transactions(30)
    written: list[int] = []
    producer.begin_transaction()
    producer.produce(topic, b"committed", b"k", partition=0, on_delivery=_delivered(written))
    producer.commit_transaction(30)
    # The state a commit is in while its marker is still on its way to this partition:
    # the record is written, not yet stable.
    producer.begin_transaction()
    producer.produce(topic, b"pending", b"k", partition=0, on_delivery=_delivered(written))
    producer.flush(30)
    first, pending = written
    offsets = KafkaOffsets(provisioned)
    replica_at = {"position": pending}  # applied the committed record and its marker
    feed = SimpleNamespace(
        replica=SimpleNamespace(position=lambda _base, _p: replica_at["position"]),
        lag=lambda: 0)
    gate = ConsistencyGate(provisioned, feed, offsets)  # type: ignore[arg-type]
    try:
        assert (first, pending) == (0, 2)  # the committed record, its marker, the pending one
        end = offsets.end(topic, 0, 10.0)
        # The stable end is 2 here: a wait up to it would pass without the pending record.
        assert end == pending + 1
        assert not gate._replica_reached(MEMORIES, 0, end, 5.0)
        producer.commit_transaction(30)
        # Its marker now lies at ``end``: still a data record below it to apply.
        assert not gate._replica_reached(MEMORIES, 0, end, 5.0)
        replica_at["position"] = pending + 1
        assert gate._replica_reached(MEMORIES, 0, end, 5.0)
        assert gate._replica_reached(MEMORIES, 0, offsets.end(topic, 0, 10.0), 5.0)
    finally:
        gate.close()
