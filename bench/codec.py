"""Avro per record: fastavro against the code ``streams.common.avro_fast`` compiles.

The worker writes a memory record (memories.v1) and a scored record per event and reads a
telemetry and a scored record; this times each, written and read, by fastavro's
``schemaless_writer`` / ``schemaless_reader`` and by the compiled functions, alternately in
one process, and prints µs per record (min / median / max of the repeats) and the ratio.
The records are shaped as the peers benchmark's: a memory merged 4 times.

    PYTHONPATH=. .venv/bin/python -m bench.codec --repeats 5
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import fastavro

from streams.common.avro_fast import compile_reader, compile_writer
from streams.common.registry import latest_schema

EVENT = {"tenant": "tenant-0", "event_id": "3f1c2a9e-6d0b-4c55-9a43-1f2e8d7c6b5a",
         "event_time": 1_764_680_000_000, "session_id": "session-0042",
         "text": "the build of service 42 uses port 8042 and deploys on tuesdays"}
RECORDS: dict[str, dict[str, Any]] = {
    "memories.v1": {**EVENT, "memory_id": "6b0c7e1d-93a4-5f2e-8c11-0d4e5f6a7b8c", "kind": "query",
                    "content_hash": "ab" * 32, "embedding": os.urandom(1536),
                    "model_id": "onnx:all-MiniLM-L6-v2:fp32", "dimension": 384, "value": 0.62,
                    "confidence": 0.8, "occurrence_count": 5,
                    "source_event_ids": [EVENT["event_id"]] * 5,
                    "merges": [{"event_id": EVENT["event_id"], "similarity": 1.0,
                                "match": "exact"}] * 4,
                    "deleted": False, "scorer_version": "v3", "valid_from": EVENT["event_time"],
                    "supersedes": None, "superseded_by": None, "superseded_at": None},
    "scored.v1": {**EVENT, "interaction_id": "interaction-7", "kind": "query",
                  "source_topic": "telemetry.v1", "value": 0.62, "confidence": 0.8,
                  "needs_feedback": False, "components": {"novelty": 0.5, "reuse": 0.25,
                                                          "outcome": 0.75, "feedback": 0.5},
                  "scorer_version": "v3", "revision": 0, "content_hash": "ab" * 32},
    "telemetry.v1": {**EVENT, "interaction_id": "interaction-7", "kind": "QUERY",
                     "tool_name": None, "outcome": None, "latency_ms": 420,
                     "attributes": {"client": "bench"}, "model": "assistant-1",
                     "token_count": 17},
}
SUBJECT_SCHEMA = {"memories.v1": "memory", "scored.v1": "scored", "telemetry.v1": "telemetry"}


def _rate(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    """Time each record's write and read both ways and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--records", type=int, default=20_000, help="per timing")
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    print("| record | fastavro write µs | compiled write µs | ratio | fastavro read µs "
          "| compiled read µs | ratio |\n|---|---|---|---|---|---|---|")
    for topic, record in RECORDS.items():
        schema = latest_schema(SUBJECT_SCHEMA[topic])
        parsed = fastavro.parse_schema(schema)
        write, read = compile_writer(schema), compile_reader(schema)
        assert write is not None and read is not None, topic
        record = {f["name"]: record.get(f["name"]) for f in schema["fields"]}
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, record)
        body = buf.getvalue()
        if write(record) != body:
            raise SystemExit(f"{topic}: the compiled writer's bytes differ from fastavro's")
        timings = results[topic] = {"fw": [], "cw": [], "fr": [], "cr": []}
        for _ in range(args.repeats):  # alternate, so a noisy moment hits both
            timings["fw"].append(_rate(lambda: fastavro.schemaless_writer(
                io.BytesIO(), parsed, record), args.records))  # noqa: B023 - timed at once
            timings["cw"].append(_rate(lambda: write(record), args.records))  # noqa: B023
            timings["fr"].append(_rate(lambda: fastavro.schemaless_reader(
                io.BytesIO(body), parsed, None), args.records))  # noqa: B023
            timings["cr"].append(_rate(lambda: read(body, 0), args.records))  # noqa: B023
        m = {k: statistics.median(v) for k, v in timings.items()}
        spread = {k: f"{min(v):.1f} / **{m[k]:.1f}** / {max(v):.1f}" for k, v in timings.items()}
        print(f"| {topic} ({len(body)} bytes) | {spread['fw']} | {spread['cw']} | "
              f"{m['fw'] / m['cw']:.2f} | {spread['fr']} | {spread['cr']} | "
              f"{m['fr'] / m['cr']:.2f} |")
    print(json.dumps({"bench": "codec", "loadavg": os.getloadavg(), "us": results}))


if __name__ == "__main__":
    main()
