"""How much two CPU-bound processes get out of this machine's cores, against one alone.

The 2-worker target of the peers benchmark (bench/peers.py) assumes that two workers each
run as fast as one does alone. This measures what the machine gives: a worker-like loop
(decode a memory-sized record, change it, encode it again: msgpack, dicts, bytes) runs
for ``--seconds`` in one process alone, then in two processes at once, alternately, and
prints the loops per second of each and the ratio (both together ÷ one alone). A ratio
under 2 is what the cores lose to each other (shared caches, memory bandwidth, a host's
other tenants), before any Kafka broker takes its share.

    PYTHONPATH=. .venv/bin/python -m bench.cores --seconds 5 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from typing import Any

from streams.processing.store import decode_value, encode_value


def _record(i: int) -> dict[str, Any]:
    return {
        "tenant": "tenant-0", "memory_id": f"m-{i:08d}", "event_id": f"e-{i:08d}",
        "event_time": 1_700_000_000_000 + i, "text": f"the build of service {i} uses port "
        f"{8000 + i % 1000} and deploys on tuesdays", "embedding": os.urandom(1536),
        "occurrence_count": 1, "source_event_ids": [f"e-{j:08d}" for j in range(8)],
        "merges": [{"event_id": f"e-{j:08d}", "similarity": 0.97, "match": "near"}
                   for j in range(4)],
        "deleted": False, "value": 0.5, "confidence": 0.8,
    }


def loop(seconds: float, out: Any) -> None:
    """Decode, change and encode records for ``seconds``; put the loops done in ``out``."""
    records = [encode_value(_record(i)) for i in range(64)]
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for raw in records:
            value = decode_value(raw)
            value["occurrence_count"] += 1
            value["source_event_ids"] = [*value["source_event_ids"][-7:], value["event_id"]]
            encode_value(value)
        done += len(records)
    out.put(done / seconds)


def together(n: int, seconds: float) -> list[float]:
    """Loops per second of each of ``n`` processes running at once."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=loop, args=(seconds, out)) for _ in range(n)]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    ones, twos = [], []
    for _ in range(args.repeats):
        (one,) = together(1, args.seconds)
        pair = together(2, args.seconds)
        ones.append(one)
        twos.append(sum(pair))
        print(f"one alone {one:,.0f}/s; two at once {pair[0]:,.0f} + {pair[1]:,.0f} "
              f"= {sum(pair):,.0f}/s: {sum(pair) / one:.2f} x")
    ratios = [t / o for t, o in zip(twos, ones, strict=True)]
    print(f"load average at end: {os.getloadavg()}")
    print(f"two ÷ one, min / median / max: {min(ratios):.2f} / "
          f"{statistics.median(ratios):.2f} / {max(ratios):.2f}")
    print(json.dumps({"bench": "cores", "nproc": os.cpu_count(), "one_per_s": ones,
                      "two_per_s": twos, "ratios": ratios}))


if __name__ == "__main__":
    main()
