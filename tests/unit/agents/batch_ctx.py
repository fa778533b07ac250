"""A broker-free ``BatchContext`` over real partition stores, and records shaped by the schemas.

``RecordingBatchContext`` stands in for the runtime's context the way an in-memory sink
stands in for Kafka: stores are real ``PartitionStore``s (RocksDB under ``tmp_path``) whose
changelog records are collected, sends are checked against the output topic's latest Avro
schema and collected, dead letters are collected. ``commit()`` and ``abort()`` do to the
stores what the runtime does after a transaction commits or aborts.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from agents.dedupe import content_hash
from streams.common.registry import latest_schema
from streams.common.topics import topic_spec
from streams.processing.api import DeadLetterReason, InputRecord, StoreAccess
from streams.processing.context import StoreMap
from streams.processing.store import PartitionStore


@dataclass(frozen=True)
class Sent:
    """One record an agent sent to an output topic."""

    topic: str
    record: dict[str, Any]
    key: str


@dataclass(frozen=True)
class DeadLettered:
    """One record an agent dead-lettered."""

    record: InputRecord
    reason: DeadLetterReason
    detail: str
    tenant: str | None


@dataclass(frozen=True)
class ChangelogRecord:
    """One state-store change as it would go to the store's changelog topic."""

    topic: str
    partition: int
    key: bytes
    value: bytes | None


def _parsed(topic: str) -> Any:
    return fastavro.parse_schema(latest_schema(topic_spec(topic).schema))


def avro_bytes(topic: str, value: dict[str, Any]) -> bytes:
    """Encode ``value`` with ``topic``'s latest schema (raises if it does not conform)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _parsed(topic), value)
    return buf.getvalue()


def decoded(
    topic: str, value: dict[str, Any], *, partition: int = 0, offset: int = 0
) -> InputRecord:
    """An ``InputRecord`` as the runtime hands it over: encoded, then decoded with the schema
    (timestamps become datetimes, defaults are filled in)."""
    raw = avro_bytes(topic, value)
    parsed = _parsed(topic)
    value_out = fastavro.schemaless_reader(io.BytesIO(raw), parsed, parsed)
    assert isinstance(value_out, dict)
    return InputRecord(topic, partition, offset, str(value["tenant"]).encode(), raw, value_out)


def telemetry(
    text: str,
    *,
    event_id: str,
    interaction_id: str = "i-1",
    event_time: int = 1_700_000_000_000,
    tenant: str = "acme",
    kind: str = "RESPONSE",
    outcome: str | None = None,
    partition: int = 0,
    offset: int = 0,
) -> InputRecord:
    """A telemetry.v1 event (schema telemetry-2)."""
    value = {
        "tenant": tenant,
        "event_id": event_id,
        "event_time": event_time,
        "session_id": "s-1",
        "interaction_id": interaction_id,
        "kind": kind,
        "text": text,
        "outcome": outcome,
    }
    return decoded("telemetry.v1", value, partition=partition, offset=offset)


def feedback(
    rating: float,
    *,
    interaction_id: str = "i-1",
    event_id: str = "f-1",
    event_time: int = 1_700_000_001_000,
    tenant: str = "acme",
    partition: int = 0,
    offset: int = 0,
) -> InputRecord:
    """A feedback.v1 rating of one interaction (schema feedback-1)."""
    value = {
        "tenant": tenant,
        "event_id": event_id,
        "event_time": event_time,
        "interaction_id": interaction_id,
        "session_id": "s-1",
        "rating": rating,
    }
    return decoded("feedback.v1", value, partition=partition, offset=offset)


def scored(
    text: str,
    *,
    event_id: str,
    tenant: str = "acme",
    value: float | None = None,
    confidence: float = 0.0,
    revision: int = 0,
    event_time: int = 1_700_000_000_000,
    kind: str = "RESPONSE",
    partition: int = 0,
    offset: int = 0,
) -> InputRecord:
    """A scored.v1 record as the score agent sends it (schema scored-1)."""
    record = {
        "tenant": tenant,
        "event_id": event_id,
        "event_time": event_time,
        "session_id": "s-1",
        "interaction_id": "i-1",
        "kind": kind,
        "text": text,
        "source_topic": "telemetry.v1",
        "value": value,
        "confidence": confidence,
        "needs_feedback": value is None,
        "components": {"reusability": 0.0, "complexity": 0.05},
        "scorer_version": "value-scorer/1",
        "revision": revision,
        "content_hash": content_hash(text),
    }
    return decoded("scored.v1", record, partition=partition, offset=offset)


class RecordingBatchContext(StoreMap):
    """A ``BatchContext`` without a broker: real stores, collected outputs, explicit outcome."""

    def __init__(
        self, root: Path, store_names: Iterable[str], partitions: Iterable[int] = (0,)
    ) -> None:
        self.changelog: list[ChangelogRecord] = []
        stores = {
            (name, p): PartitionStore(
                name, root / name / str(p), f"test-{name}-changelog", p, self._emit
            )
            for name in store_names
            for p in partitions
        }
        super().__init__(stores)
        self._partition_stores = stores
        self.agent = ""
        self.sent: list[Sent] = []
        self.dead_letters: list[DeadLettered] = []
        self._marks = (0, 0, 0)

    def _emit(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        self.changelog.append(ChangelogRecord(topic, partition, key, value))

    def send(self, topic: str, record: dict[str, Any], *, key: str) -> None:
        """Collect ``record`` after checking it encodes with ``topic``'s latest schema."""
        avro_bytes(topic, record)
        self.sent.append(Sent(topic, record, key))

    def dead_letter(
        self,
        record: InputRecord,
        reason: DeadLetterReason,
        detail: str,
        *,
        tenant: str | None = None,
    ) -> None:
        """Collect the dead letter."""
        self.dead_letters.append(DeadLettered(record, reason, detail, tenant))

    def flush(self) -> None:
        """Nothing is buffered."""

    def sent_to(self, topic: str) -> list[dict[str, Any]]:
        """The records sent to ``topic``, in order."""
        return [s.record for s in self.sent if s.topic == topic]

    def commit(self) -> None:
        """The batch's transaction committed: its store writes go to the changelog (as the
        runtime sends them before the commit), then are applied (no changelog offset)."""
        for store in self._partition_stores.values():
            store.send_changes()
        for store in self._partition_stores.values():
            store.apply(None)
        self._marks = (len(self.sent), len(self.dead_letters), len(self.changelog))

    def abort(self) -> None:
        """The batch's transaction aborted: forget its store writes and its outputs."""
        for store in self._partition_stores.values():
            store.discard()
        sent, dead, changes = self._marks
        del self.sent[sent:], self.dead_letters[dead:], self.changelog[changes:]

    def committed(self) -> StoreAccess:
        """The stores as ``rebuild`` sees them (only committed data is read there)."""
        return StoreMap(self._partition_stores)

    def close(self) -> None:
        """Close every store's RocksDB."""
        for store in self._partition_stores.values():
            store.close()


BatchCtxFactory = Callable[..., RecordingBatchContext]
