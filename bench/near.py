"""Near-duplicate search benchmark: memorize's exact candidate search, one query at a time
against a batch prefetch (one matrix product per chunk of queries), on one tenant's index.

A batch of new texts is searched the way memorize does it: prefetch every query, then
answer each after adding the memory the previous one created (so the answers must include
rows added since the prefetch). Each answer is checked against a search at that moment.
OpenBLAS runs on one thread, as in the worker.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python -m bench.near [--sizes 1500,7000,20000,100000]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from streams.models.memory_index import MemoryIndex

DIMENSION = 384  # all-MiniLM-L6-v2
K = 3  # memorize's NEAR_CANDIDATES


def _index(rows: int, rng: np.random.Generator) -> MemoryIndex:
    index = MemoryIndex("bench", DIMENSION, tenant="t")
    for start in range(0, rows, 50_000):
        block = rng.standard_normal((min(50_000, rows - start), DIMENSION)).astype(np.float32)
        index.add_many([f"m{i:07d}" for i in range(start, start + len(block))], block, "bench")
    return index


def _pass(index: MemoryIndex, queries: dict[str, np.ndarray], *, prefetch: bool
          ) -> tuple[float, list[list[tuple[str, float]]]]:
    """µs per query for one batch; each answered query adds its own memory, as memorize
    does for new content."""
    began = time.perf_counter()
    if prefetch:
        index.prefetch(queries, K)
    answers = []
    for key, query in queries.items():
        answers.append(index.nearest(query, K, key=key if prefetch else None))
        index.add(f"new-{key}", query, model_id="bench")
    return (time.perf_counter() - began) / len(queries) * 1e6, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1500,7000,20000,100000")
    parser.add_argument("--batch", type=int, default=256, help="new texts per batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, numpy {np.__version__}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}, "
          f"load {os.getloadavg()[0]:.2f}")
    print("| memories in the tenant | one query at a time, µs/query (min / **median** / max) "
          "| batch prefetch, µs/query | ratio |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(7)
    for rows in (int(s) for s in args.sizes.split(",")):
        index = _index(rows, rng)
        direct: list[float] = []
        batched: list[float] = []
        for _ in range(args.repeats):
            queries = {f"q{i}": rng.standard_normal(DIMENSION).astype(np.float32)
                       for i in range(args.batch)}
            # Both ways from the same index state: the second pass's adds are removed first.
            t_direct, want = _pass(index, queries, prefetch=False)
            for key in queries:
                index.remove(f"new-{key}")
            t_batched, got = _pass(index, queries, prefetch=True)
            for key in queries:
                index.remove(f"new-{key}")
            if [[m for m, _ in a] for a in got] != [[m for m, _ in a] for a in want]:
                raise SystemExit(f"{rows} rows: a prefetched answer differs from a search")
            direct.append(t_direct)
            batched.append(t_batched)
        d, b = statistics.median(direct), statistics.median(batched)
        print(f"| {rows:,} | {min(direct):,.0f} / **{d:,.0f}** / {max(direct):,.0f} "
              f"| {min(batched):,.0f} / **{b:,.0f}** / {max(batched):,.0f} | {d / b:.1f} |")


if __name__ == "__main__":
    main()
