"""Every memstream topic is partitioned by tenant, with Kafka's own murmur2 partitioner.

All topics have the same partition count, so a tenant's telemetry, feedback, voice notes,
transcripts, scored events, memories and summaries sit on the same partition number of
every topic. That co-partitioning is what lets an agent write its outputs to the partition
it reads from, inside the transaction of that input partition (see docs/exactly-once.md),
and it makes the tenant the unit of sharding. The record *key* still says what the record
is about (session, interaction, memory id); only the partition is chosen from the tenant.
"""

from __future__ import annotations

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as unsigned 32 bits."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & ~3
    extra = length % 4
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for_tenant(tenant: str, partitions: int) -> int:
    """The partition of every topic that holds ``tenant``'s records."""
    return (murmur2(tenant.encode("utf-8")) & 0x7FFFFFFF) % partitions
