"""Tenant partitioning uses Kafka's murmur2, so Java clients and Redpanda agree with us."""

from __future__ import annotations

import pytest

from streams.common.partitioning import murmur2, partition_for_tenant


@pytest.mark.parametrize(
    ("data", "java_int"),
    [  # vectors from Kafka's UtilsTest.testMurmur2
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_kafka(data: bytes, java_int: int) -> None:
    assert murmur2(data) == java_int & 0xFFFFFFFF


def test_tenant_partition_is_stable_and_in_range() -> None:
    seen = {partition_for_tenant(f"tenant-{i}", 4) for i in range(100)}
    assert seen == {0, 1, 2, 3}
    assert partition_for_tenant("acme", 4) == partition_for_tenant("acme", 4)
