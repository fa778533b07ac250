"""Recall latency as a client sees it: the real read service over HTTP, keep-alive clients.

For each size N, one tenant's index of N memories (synthetic 384-d unit vectors, as in
``bench.recall``) is written as a snapshot, the service's own restart path (``SnapshotStore``,
offsets covering nothing of the bench's empty topics), and ``memstream serve`` starts on it in
a subprocess, as in production (uvicorn with the bounded protocol, the default ONNX fp32
query model, the feed following the topics). No memory goes through Kafka: producing and
applying 1M memory records would take minutes and measure the rebuild, not recall.

The client is ``httpx.Client`` (keep-alive): ``--requests`` recalls one after another, then
the same count from ``--concurrency`` threads with a client each. Each query is a different
English sentence, embedded by the service (embedding included). Each size runs ``--repeats``
times; the JSON lines give p50/p99/max and requests/s per repeat, min/median/max of p99 over
the repeats, and the 1-minute load average before and after. The last line is a summary.

Snapshots are kept in ``--snapshots`` (building the 1M HNSW graph takes ~6 minutes on 2 cores,
once): a full run on kept snapshots takes ~4 minutes.

    PYTHONPATH=. .venv/bin/python -W ignore -m bench.recall_http --sizes 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.recall import DIM, MODEL, pct, record, vectors
from streams.models.index import IndexPolicy
from streams.service.replica import Replica
from streams.service.snapshot import SnapshotStore

PREFIX = "bench.recallhttp."
TENANT = "bench"
SENTENCES = (
    "How do I restart the billing service after deploy number {i}?",
    "What did we decide about the retention of log bucket {i}?",
    "Which port does staging service {i} listen on?",
    "Remind me what the user said about invoice {i} last week",
    "Summarize the incident {i} and who fixed it",
)


def query_texts(n: int) -> list[str]:
    return [SENTENCES[i % len(SENTENCES)].format(i=i) for i in range(n)]


def snapshot_dir(root: Path, n: int, policy: IndexPolicy) -> Path:
    """Build (once) and return the snapshot directory of an ``n``-memory index."""
    name = f"n{n}-max{policy.exact_max}-m{policy.hnsw_m}-efc{policy.hnsw_ef_construction}"
    directory = root / name
    store = SnapshotStore(directory)
    if store.current() is not None:
        return directory
    started = time.perf_counter()
    replica = Replica(MODEL, DIM, policy)
    data = vectors(n, seed=1, isotropic=False)
    with replica.lock:
        for i in range(n):
            replica.apply("memories.v1", 0, i, record(i, data[i], TENANT))
            if i % 10_000 == 9_999:
                replica.sync(build=False)
        replica.sync(build=False)
    replica.build_graphs()  # one graph build, as the feed does
    with replica.lock:
        replica.offsets = {"memories.v1": {}, "summaries.v1": {}}  # nothing of the log
        store.save(replica, {b: PREFIX + b for b in ("memories.v1", "summaries.v1")})
    print(json.dumps({"built": n, "seconds": round(time.perf_counter() - started, 1)}),
          file=sys.stderr, flush=True)
    return directory


class Service:
    """``memstream serve`` in a subprocess, on a snapshot directory."""

    def __init__(self, data_dir: Path, port: int, token: str, log: Path,
                 extra_env: dict[str, str]) -> None:
        env = {**os.environ, **extra_env, "MEMSTREAM_TOPIC_PREFIX": PREFIX,
               "MEMSTREAM_SERVE_DATA_DIR": str(data_dir), "MEMSTREAM_SERVE_PORT": str(port),
               "MEMSTREAM_API_TOKENS": f"{token}={TENANT}", "PYTHONPATH": os.getcwd()}
        self.url = f"http://127.0.0.1:{port}"
        self._log = log.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-W", "ignore", "-m", "streams.ops.cli", "serve", "--plain-logs"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float) -> float:
        started = time.perf_counter()
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.perf_counter() - started < timeout_s:
                if self.process.poll() is not None:
                    raise RuntimeError(f"memstream serve exited ({self.process.returncode}); "
                                       f"see {self._log.name}")
                try:
                    if client.get("/readyz").status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"memstream serve not ready after {timeout_s}s; see {self._log.name}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def recall_loop(url: str, token: str, texts: list[str], k: int, out: list[float]) -> None:
    """Recall each text in turn on one keep-alive connection; append latencies (ms)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                      timeout=30) as client:
        for text in texts:
            t = time.perf_counter()
            response = client.post("/v1/recall", json={"query": text, "k": k})
            out.append((time.perf_counter() - t) * 1000)
            if response.status_code != 200 or len(response.json()["hits"]) != k:
                raise RuntimeError(f"recall answered {response.status_code}: "
                                   f"{response.text[:200]}")


def measure(url: str, token: str, texts: list[str], k: int, concurrency: int) -> dict[str, Any]:
    """Latency figures of ``texts`` recalled by ``concurrency`` clients (1: sequential)."""
    shares = [texts[i::concurrency] for i in range(concurrency)]
    latencies: list[list[float]] = [[] for _ in shares]
    threads = [threading.Thread(target=recall_loop, args=(url, token, share, k, out))
               for share, out in zip(shares, latencies, strict=True)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    flat = [x for share in latencies for x in share]
    if len(flat) != len(texts):
        raise RuntimeError(f"{len(texts) - len(flat)} recalls failed (see the log above)")
    return {"p50_ms": round(pct(flat, 50), 2), "p99_ms": round(pct(flat, 99), 2),
            "max_ms": round(max(flat), 2), "per_s": round(len(flat) / wall, 1)}


def bench_size(n: int, args: argparse.Namespace, policy: IndexPolicy) -> dict[str, Any]:
    data_dir = snapshot_dir(Path(args.snapshots), n, policy)
    token = secrets.token_urlsafe(16)
    log = Path(args.tmp) / f"serve-{n}.log"
    extra_env = dict(item.split("=", 1) for item in args.env)
    service = Service(data_dir, args.port, token, log, extra_env)
    try:
        ready_s = service.wait_ready(args.ready_timeout)
        texts = query_texts(args.requests * (args.repeats + 1))
        warm = texts[: args.requests // 5]
        measure(service.url, token, warm, args.k, 1)  # connections, model, caches
        load_before = os.getloadavg()[0]
        runs: dict[str, list[dict[str, Any]]] = {"sequential": [], "concurrent": []}
        for r in range(args.repeats):
            batch = texts[(r + 1) * args.requests: (r + 2) * args.requests]
            runs["sequential"].append(measure(service.url, token, batch, args.k, 1))
            runs["concurrent"].append(measure(service.url, token, batch, args.k,
                                              args.concurrency))
        load_after = os.getloadavg()[0]
    finally:
        service.stop()
    out: dict[str, Any] = {"n": n, "ready_s": round(ready_s, 1), "requests": args.requests,
                           "k": args.k, "load_before": round(load_before, 2),
                           "load_after": round(load_after, 2)}
    for mode, results in runs.items():
        p99s = [x["p99_ms"] for x in results]
        out[mode] = {"p99_ms_min_median_max": [min(p99s), statistics.median(p99s), max(p99s)],
                     "p50_ms_median": statistics.median(x["p50_ms"] for x in results),
                     "max_ms": max(x["max_ms"] for x in results),
                     "per_s_median": statistics.median(x["per_s"] for x in results),
                     "repeats": results}
    out["concurrent"]["clients"] = args.concurrency
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--requests", type=int, default=400, help="per repeat and mode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--port", type=int, default=18780)
    parser.add_argument("--exact-max", type=int, default=IndexPolicy().exact_max)
    parser.add_argument("--snapshots", default=str(Path(tempfile.gettempdir()) /
                                                   "memstream-bench-recall-http"),
                        help="where built indexes are kept between runs")
    parser.add_argument("--ready-timeout", type=float, default=180)
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="service logs")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the service, e.g. MEMSTREAM_EMBEDDING_THREADS=1")
    args = parser.parse_args()
    from streams.common.admin import ensure_topics
    from streams.common.settings import load_settings

    # The feed needs its (empty) topics; the registry knows the schemas from `dev up`.
    ensure_topics(load_settings(topic_prefix=PREFIX))
    policy = IndexPolicy(exact_max=args.exact_max)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,  # noqa: S607
                            text=True, check=False).stdout.strip()
    print(json.dumps({"bench": "recall_http", "commit": commit, "cpus": os.cpu_count(),
                      "machine": platform.processor() or platform.machine(),
                      "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "args": vars(args)}), flush=True)
    results = []
    for n in (int(s) for s in args.sizes.split(",") if s):
        results.append(bench_size(n, args, policy))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"summary": {
        str(r["n"]): {mode: {"p50_ms": r[mode]["p50_ms_median"],
                             "p99_ms": r[mode]["p99_ms_min_median_max"],
                             "per_s": r[mode]["per_s_median"]}
                      for mode in ("sequential", "concurrent")}
        | {"load": [r["load_before"], r["load_after"]]} for r in results}}), flush=True)


if __name__ == "__main__":
    main()
