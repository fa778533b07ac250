"""Producing a batch's records: outputs on their tenant's partition, and dead letters.

Both are encoded with the output topic's latest schema (its id looked up once) and produced
into the open transaction; what they carry is counted once the batch commits.
"""

from __future__ import annotations

import logging
from typing import Any

from streams.common.codec import AvroCodec, CodecError
from streams.common.exceptions import UnavailableError
from streams.common.partitioning import partition_for_tenant
from streams.common.registry import latest_schema, subject_for
from streams.common.settings import Settings
from streams.common.topics import topic_spec
from streams.processing.api import InputRecord
from streams.processing.deadletter import DeadLetterReason, SourceCoordinates, dead_letter
from streams.processing.transaction import Transactions

logger = logging.getLogger(__name__)

# Tenants whose partition is remembered (murmur2 in Python costs more than the produce call).
_PARTITION_CACHE_SIZE = 100_000


class Outputs:
    """Encodes and produces records into the worker's open transaction."""

    def __init__(self, settings: Settings, codec: AvroCodec, transactions: Transactions) -> None:
        self.settings = settings
        self.codec = codec
        self.transactions = transactions
        self._targets: dict[str, tuple[str, str, dict[str, Any]]] = {}
        self._partition_of: dict[str, int] = {}

    def send(self, topic: str, record: dict[str, Any], *, key: str, agent: str) -> None:
        """Encode and produce ``record`` inside the open transaction."""
        full, subject, schema = self._target(topic)
        value = self.codec.encode(subject, schema, record)
        tenant = str(record["tenant"])
        partition = self._partition_of.get(tenant)
        if partition is None:
            partition = partition_for_tenant(tenant, self.settings.partitions)
            if len(self._partition_of) < _PARTITION_CACHE_SIZE:
                self._partition_of[tenant] = partition
        self.transactions.produce(full, partition, key.encode(), value)
        self.transactions.counts[("events_out", agent, topic)] += 1

    def _target(self, topic: str) -> tuple[str, str, dict[str, Any]]:
        """(full topic, subject, schema) of an output topic, its schema id looked up once: a
        subject the registry lacks is a deployment fault, waited out, never a record's."""
        target = self._targets.get(topic)
        if target is None:
            spec = topic_spec(topic)
            subject, schema = subject_for(self.settings, spec), latest_schema(spec.schema)
            try:
                self.codec.schema_id(subject, schema)
            except CodecError as exc:
                raise UnavailableError(f"output {topic}: {exc}") from exc
            target = self._targets[topic] = (self.settings.topic(topic), subject, schema)
        return target

    def dead_letter(
        self,
        record: InputRecord,
        reason: DeadLetterReason,
        detail: str,
        *,
        agent: str,
        tenant: str | None,
    ) -> None:
        """Dead-letter a decoded input record."""
        full = self.settings.topic(record.topic)
        source = SourceCoordinates(full, record.partition, record.offset, record.key, record.raw)
        self.dead_letter_at(source, reason, detail, agent, tenant)

    def dead_letter_at(
        self,
        source: SourceCoordinates,
        reason: DeadLetterReason,
        detail: str,
        agent: str,
        tenant: str | None,
    ) -> None:
        """Dead-letter the record at ``source`` (decoded or not)."""
        letter = dead_letter(source, agent=agent, reason=reason, detail=detail, tenant=tenant)
        _full, subject, schema = self._target("deadletter.v1")
        value = self.codec.encode(subject, schema, letter)
        # Same partition number as the source: a dead letter stays with its tenant.
        self.transactions.produce(
            self.settings.topic("deadletter.v1"), source.partition, source.topic.encode(), value
        )
        self.transactions.counts[("dead_letters", agent, reason.value)] += 1
        logger.warning(
            "dead letter from %s[%d]@%d by %s: %s (%s)",
            source.topic, source.partition, source.offset, agent, reason.value, detail,
        )
