"""How a parallel rebuild splits the partitions among its processes."""

from __future__ import annotations

from streams.service.rebuild import balanced_shares


def test_shares_cover_every_partition_once_and_balance_records() -> None:
    sizes = {0: 260, 1: 190, 2: 290, 3: 260}  # 100 tenants hashed onto 4 partitions
    shares = balanced_shares(sizes, 2)
    assert sorted(p for share in shares for p in share) == [0, 1, 2, 3]
    loads = sorted(sum(sizes[p] for p in share) for share in shares)
    assert loads == [480, 520]  # round robin (0,2 | 1,3) would give 450 / 550


def test_empty_partitions_are_still_spread() -> None:
    assert balanced_shares({0: 0, 1: 0, 2: 0, 3: 0}, 2) == [[0, 2], [1, 3]]
    assert balanced_shares({0: 5, 1: 0, 2: 0}, 3) == [[0], [1], [2]]
