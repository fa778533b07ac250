"""RocksDB reads of a state store: RocksDB's default options against the store's own.

Writes ``--keys`` memory-sized values (2.3 KB: a 1,536-byte vector and the rest) into a
fresh database opened each way, flushes them into files, then times gets of keys that are
there and of keys that are not (every new text's content lookup is one), and prints µs per
get (min / median / max of the repeats, the two databases alternating).

    PYTHONPATH=. .venv/bin/python -m bench.store --keys 20000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from streams.processing.store import _options


def _default() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    return options


def _filled(path: Path, options: Options, keys: list[bytes], values: list[bytes]) -> Rdict:
    db = Rdict(str(path), options)
    for start in range(0, len(keys), 1000):
        batch = WriteBatch(raw_mode=True)
        for i, key in enumerate(keys[start:start + 1000]):
            batch.put(key, values[(start + i) % len(values)])
        db.write(batch)
    db.flush()
    return db


def _per_get(db: Rdict, keys: list[bytes]) -> float:
    start = time.perf_counter()
    for key in keys:
        db.get(key)
    return (time.perf_counter() - start) / len(keys) * 1e6


def main() -> None:
    """Fill both databases, time their gets alternately, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--gets", type=int, default=50_000, help="per timing")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    keys = [f"tenant-0\x00{rng.getrandbits(128):032x}".encode() for _ in range(args.keys)]
    values = [os.urandom(1536) + b"m" * 800 for _ in range(256)]
    present = [rng.choice(keys) for _ in range(args.gets)]
    absent = [key + b"-absent" for key in present]
    with tempfile.TemporaryDirectory() as tmp:
        dbs = {"rocksdb default": _filled(Path(tmp) / "a", _default(), keys, values),
               "memstream store": _filled(Path(tmp) / "b", _options(), keys, values)}
        times: dict[str, dict[str, list[float]]] = {n: {"present": [], "absent": []} for n in dbs}
        for _ in range(args.repeats):
            for name, db in dbs.items():
                times[name]["present"].append(_per_get(db, present))
                times[name]["absent"].append(_per_get(db, absent))
        for db in dbs.values():
            db.close()
    print("| options | get, key present, µs | get, key absent, µs |\n|---|---|---|")
    for name, found in times.items():
        cells = [f"{min(v):.2f} / **{statistics.median(v):.2f}** / {max(v):.2f}"
                 for v in found.values()]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    print(json.dumps({"bench": "store", "keys": args.keys, "loadavg": os.getloadavg(),
                      "us": times}))


if __name__ == "__main__":
    main()
