"""Read-your-writes: wait until the replica reflects a write the SDK made.

The producer's consistency token is ``topic:partition:offset`` of the event it wrote, on
an *input* topic (telemetry.v1 usually); the replica consumes memories.v1, several hops
later. Every topic is partitioned by tenant with one partition count, so the write's
effects stay on the same partition number at every hop. The gate walks the hops:

1. the app's consumer group (``app_id``: the worker) has committed an offset past the
   token on its topic: the event was processed, and its outputs (scored.v1) were
   committed in the same transaction;
2. for the next topic (scored.v1, and transcripts.v1 after voice.v1) take its end offset
   *now*, which lies above those outputs, and wait until the group has consumed every
   committed data record below it (the committed offset may stop short of the end by
   transaction markers, so the check reads the log from the committed offset with
   read_committed and looks for a data record before the end);
3. take the end offsets of memories.v1 and summaries.v1 and wait until the replica has
   applied them (summaries come from the same transactions); for memories.v1, every
   committed record below it.

A token on commands.v1 (what DELETE returns) waits for steps 1 and 3; one on memories.v1
or summaries.v1 itself waits for step 3 only.
If the wait passes ``consistency_timeout_s`` the request gets 503 with the stage it
waited at and the replica's lag.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams.exceptions import MemstreamError
from streams.service.feed import ReplicaFeed
from streams.service.replica import MEMORIES, SUMMARIES
from streams.settings import Settings
from streams.topics import topic_spec

# What the app writes next from each input topic (same partition number).
NEXT_HOP = {
    "voice.v1": "transcripts.v1",
    "telemetry.v1": "scored.v1",
    "transcripts.v1": "scored.v1",
    "feedback.v1": "scored.v1",
    "scored.v1": MEMORIES,
    # A delete (what DELETE returns a token for): memorize applies it to memories.v1, and
    # summarize re-derives the summaries that quoted it, in the same transaction.
    "commands.v1": MEMORIES,
}


class BadToken(MemstreamError):
    """A consistency token that does not parse or names an unknown topic."""


class NotCaughtUp(MemstreamError):
    """The replica has not reached a token within the bounded wait."""

    retriable = True

    def __init__(self, message: str, *, stage: str, lag: int) -> None:
        super().__init__(message)
        self.stage = stage
        self.lag = lag


@dataclass(frozen=True)
class Position:
    """One ``topic:partition:offset`` of a consistency token (base topic name)."""

    base: str
    partition: int
    offset: int


def parse_token(token: str, prefix: str = "") -> list[Position]:
    """Positions of a token: ``topic:partition:offset`` entries separated by commas."""
    found: list[Position] = []
    for part in token.split(","):
        part = part.strip()
        topic, _, rest = part.rpartition(":")
        topic, _, partition = topic.rpartition(":")
        try:
            base = topic_spec(topic, prefix).base
            position = Position(base, int(partition), int(rest))
        except (KeyError, ValueError):
            raise BadToken(f"consistency token {part!r}: expected <topic>:<partition>:<offset> "
                           f"of a memstream topic") from None
        if base not in NEXT_HOP and base not in (MEMORIES, SUMMARIES):
            raise BadToken(f"consistency token {part!r}: {base} does not feed the read service")
        found.append(position)
    return found


class ConsistencyGate:
    """Waits (bounded) until the replica covers given positions."""

    def __init__(self, settings: Settings, feed: ReplicaFeed) -> None:
        self.settings = settings
        self.feed = feed
        self._lock = threading.Lock()
        base = {**settings.kafka_client_config(), "log_level": 3, "enable.auto.commit": False}
        # Reads the worker group's committed offsets; never subscribes, so never joins it.
        self._group = Consumer({**base, "group.id": settings.app_id})
        self._probe = Consumer({
            **base, "group.id": f"memstream-serve-probe-{uuid.uuid4()}",
            "isolation.level": "read_committed", "enable.partition.eof": True,
            "fetch.wait.max.ms": 20,
        })

    def close(self) -> None:
        """Release the consumers."""
        self._group.close()
        self._probe.close()

    def wait(self, positions: list[Position], timeout_s: float | None = None) -> None:
        """Return once every position is reflected, or raise NotCaughtUp."""
        timeout = self.settings.consistency_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        for position in positions:
            self._wait_one(position, deadline)

    def _wait_one(self, pos: Position, deadline: float) -> None:
        base, partition = pos.base, pos.partition
        if base in (MEMORIES, SUMMARIES):
            self._until(deadline, f"replica applying {base}[{partition}]@{pos.offset}",
                        lambda: self._replica_reached(base, partition, pos.offset + 1))
            return
        topic = self.settings.topic(base)
        self._until(deadline, f"worker group {self.settings.app_id} committing past "
                    f"{topic}[{partition}]@{pos.offset}",
                    lambda t=topic: self._committed(t, partition) > pos.offset)
        while True:
            base = NEXT_HOP[base]
            topic = self.settings.topic(base)
            end = self._end(topic, partition)
            if base == MEMORIES:
                # The same transactions that wrote memories wrote the session summaries.
                summaries = self.settings.topic(SUMMARIES)
                summaries_end = self._end(summaries, partition)
                self._until(deadline, f"replica applying {topic}[{partition}] up to {end}",
                            lambda e=end: self._replica_reached(MEMORIES, partition, e))
                self._until(deadline,
                            f"replica applying {summaries}[{partition}] up to {summaries_end}",
                            lambda e=summaries_end: self._replica_reached(SUMMARIES, partition, e))
                return
            self._until(deadline, f"worker group {self.settings.app_id} consuming "
                        f"{topic}[{partition}] up to {end}",
                        lambda t=topic, e=end: self._group_consumed(t, partition, e))

    def _until(self, deadline: float, stage: str, done: Callable[[], bool]) -> None:
        while not done():
            if time.monotonic() >= deadline:
                raise NotCaughtUp(f"not caught up: waiting for {stage}", stage=stage,
                                  lag=self.feed.lag())
            time.sleep(0.02)

    def _replica_reached(self, base: str, partition: int, end: int) -> bool:
        start = self.feed.replica.position(base, partition)
        return start >= end or self._no_data_between(self.settings.topic(base), partition,
                                                     start, end)

    def _group_consumed(self, topic: str, partition: int, end: int) -> bool:
        committed = self._committed(topic, partition)
        return committed >= end or self._no_data_between(topic, partition, committed, end)

    def _committed(self, topic: str, partition: int) -> int:
        with self._lock:
            [tp] = self._group.committed([TopicPartition(topic, partition)],
                                         timeout=self.settings.request_timeout_s)
        return max(tp.offset, 0)

    def _end(self, topic: str, partition: int) -> int:
        with self._lock:
            _low, high = self._group.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self.settings.request_timeout_s,
                cached=False)
        return int(high)

    def _no_data_between(self, topic: str, partition: int, start: int, end: int) -> bool:
        """Whether no committed data record lies in ``[start, end)`` (only markers, aborted
        records, or nothing); False while an open transaction holds the stable end lower."""
        with self._lock:
            self._probe.assign([TopicPartition(topic, partition, start)])
            try:
                deadline = time.monotonic() + 0.5
                while time.monotonic() < deadline:
                    msg = self._probe.poll(0.1)
                    if msg is None:
                        continue
                    err = msg.error()
                    if err is None:
                        return msg.offset() >= end
                    if err.code() == KafkaError._PARTITION_EOF:
                        return msg.offset() >= end
                return False
            finally:
                self._probe.unassign()
