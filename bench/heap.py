"""Full garbage collections on a worker's and a read service's heap, with and without
``freeze_heap`` (streams/common/heap.py).

CPython's full collection walks every object the collector tracks; a process that builds a
large heap once (models, agents, a replica of memories) pays for that walk at every full
collection, with all its threads stopped. This builds each heap as the process does
(``build_agents`` for the worker's default agents; ``Replica.apply`` of ``--sizes``
synthetic memories for the read service), then times ``gc.collect()`` ``--repeats`` times,
``freeze_heap()`` once, and ``gc.collect()`` again, and prints ms (min / median / max).
On each replica it then applies ``--updates`` new versions of its memories (the feed's
work while it serves), once as built and once frozen, and records the pauses of the full
collections CPython ran on its own meanwhile (count, longest).

    PYTHONPATH=. .venv/bin/python -m bench.heap --sizes 10000,100000 --repeats 5
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from streams.common.heap import freeze_heap


def _ms(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1e3


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f} / **{statistics.median(values):.2f}** / {max(values):.2f}"


def measure(name: str, repeats: int) -> dict[str, Any]:
    """Time full collections of the heap as it is, then frozen; leaves it unfrozen."""
    gc.collect()
    tracked = len(gc.get_objects())
    before = [_ms(gc.collect) for _ in range(repeats)]
    freeze = _ms(freeze_heap)
    after = [_ms(gc.collect) for _ in range(repeats)]
    gc.unfreeze()
    return {"heap": name, "tracked_objects": tracked, "full_collection_ms": before,
            "freeze_heap_ms": freeze, "frozen_full_collection_ms": after}


def ingest_pauses(replica: Any, size: int, updates: int, *, frozen: bool) -> dict[str, Any]:
    """Full collections (count, longest ms) while ``updates`` memories are re-applied."""
    from bench.recall import record, vectors

    data = vectors(min(size, updates), seed=2, isotropic=False)
    pauses: list[float] = []
    started = [0.0]

    def timer(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append((time.perf_counter() - started[0]) * 1e3)

    gc.collect()
    if frozen:
        freeze_heap()
    gc.callbacks.append(timer)
    try:
        with replica.lock:
            for i in range(updates):
                replica.apply("memories.v1", 0, size + i, record(i % size, data[i % len(data)],
                                                                 "bench"))
                if i % 1_000 == 999:
                    replica.sync(build=False)
    finally:
        gc.callbacks.remove(timer)
        gc.unfreeze()
    return {"frozen": frozen, "updates": updates, "full_collections": len(pauses),
            "longest_ms": max(pauses, default=0.0)}


def worker_heap() -> list[Any]:
    """The default worker's agents, models loaded (what ``memstream worker`` builds)."""
    from agents.worker import AGENT_NAMES, build_agents
    from streams.common.observability import WorkerMetrics
    from streams.common.settings import load_settings

    return build_agents(load_settings(), AGENT_NAMES, WorkerMetrics())


def replica_heap(size: int) -> Any:
    """A read replica of ``size`` memories in one tenant (as bench.recall_http builds it)."""
    from bench.recall import DIM, MODEL, record, vectors
    from streams.models.index import IndexPolicy
    from streams.service.replica import Replica

    replica = Replica(MODEL, DIM, IndexPolicy())
    data = vectors(size, seed=1, isotropic=False)
    with replica.lock:
        for i in range(size):
            replica.apply("memories.v1", 0, i, record(i, data[i], "bench"))
        replica.sync(build=False)
    return replica


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="replica sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--updates", type=int, default=100_000,
                        help="memories re-applied to each replica while pauses are recorded")
    args = parser.parse_args()
    rows = []
    held = worker_heap()
    rows.append(measure("worker (default agents)", args.repeats))
    del held
    for size in (int(s) for s in args.sizes.split(",") if s):
        held = replica_heap(size)
        row = measure(f"read replica, {size:,} memories", args.repeats)
        row["ingest"] = [ingest_pauses(held, size, args.updates, frozen=f) for f in (False, True)]
        rows.append(row)
        del held
    print("| heap | tracked objects | full collection, ms | freeze_heap, ms "
          "| full collection when frozen, ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['heap']} | {r['tracked_objects']:,} | {_spread(r['full_collection_ms'])} "
              f"| {r['freeze_heap_ms']:.1f} | {_spread(r['frozen_full_collection_ms'])} |")
    print()
    print("| replica | memories re-applied | full collections, longest ms: as built | frozen |")
    print("|---|---|---|---|")
    for r in rows:
        if "ingest" in r:
            plain, frozen = r["ingest"]
            print(f"| {r['heap']} | {plain['updates']:,} | {plain['full_collections']}, "
                  f"{plain['longest_ms']:.1f} | {frozen['full_collections']}, "
                  f"{frozen['longest_ms']:.1f} |")
    print(json.dumps({"bench": "heap", "rows": rows, "loadavg": os.getloadavg()}))


if __name__ == "__main__":
    main()
