"""The local stack itself: status, ports, and transactions (the pipeline relies on them)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streams.common.admin import ensure_topics
from streams.common.settings import Settings
from streams.ops.devstack.stack import DevStack

REPO = Path(__file__).resolve().parents[2]


def test_status_shows_kafka_and_registry_up(dev_stack: DevStack) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "streams", "dev", "status"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("kafka") and "4." in line and "127.0.0.1:" in line for line in lines)
    assert any(line.startswith("registry") and "/apis/ccompat/v7" in line for line in lines)
    assert "stopped" not in proc.stdout


def test_second_up_reuses_running_stack(dev_stack: DevStack) -> None:
    before = {c.name: c.pid for c in dev_stack.status()}
    after = {c.name: c.pid for c in dev_stack.up(lambda _m: None)}
    assert before == after


def _read(settings: Settings, topic: str, isolation: str, expect: int) -> list[bytes]:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"g-{uuid.uuid4()}",
                         "isolation.level": isolation, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                     for p in range(settings.partitions)])
    values: list[bytes] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(values) < expect:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            values.append(msg.value())
    # A little longer, so that extra (wrongly visible) records would show up too.
    end = time.monotonic() + 2
    while time.monotonic() < end:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            values.append(msg.value())
    consumer.close()
    return values


def test_transactions_commit_and_abort(stack_settings: Settings) -> None:
    ensure_topics(stack_settings)
    topic = stack_settings.topic("scored.v1")
    producer = Producer({**stack_settings.kafka_client_config(),
                         "transactional.id": f"pytest-{uuid.uuid4()}"})
    producer.init_transactions(15)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, key=b"k", value=f"committed-{i}".encode())
    producer.commit_transaction(15)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, key=b"k", value=f"aborted-{i}".encode())
    producer.flush(15)
    producer.abort_transaction(15)

    committed = _read(stack_settings, topic, "read_committed", expect=3)
    everything = _read(stack_settings, topic, "read_uncommitted", expect=6)
    assert sorted(committed) == [b"committed-0", b"committed-1", b"committed-2"]
    assert sorted(everything) == sorted(committed + [b"aborted-0", b"aborted-1", b"aborted-2"])
