"""Peers benchmark: memstream's score+dedupe path against Quix Streams on the same work.

The same generated telemetry (bench.pipeline's generator), the same broker and registry,
workers kept running. memstream runs ``memstream worker --agents score,memorize`` as a
process; the peer is ``bench.quix_peer`` (Quix Streams, exactly-once, RocksDB state) in the
quix venv. Each gets its own topic prefix. A first pass memorizes the events (memstream
embeds them; the peer uses stand-in vectors); then each repeat puts the same events again
under new event ids in new interactions — exact duplicates, so nothing is embedded — into
each system's telemetry in ONE input transaction (read_committed: the worker sees them all
at once) and times commit of that input → the group has committed every input and every
scored record (the memories.v1 output commits with the latter). CPU per event is the worker
process's utime+stime over that window. Then: worker start → first committed batch (models
cached), and two workers in one group against one, pass by pass, for each system (the peer's
own 2 ÷ 1 shows what the same machine gives any exactly-once engine). Last, each system's
memories.v1 must account for every event it was given. Prints a table and one JSON line.

    MEMSTREAM_EXTRAS="dev compare" make install
    MEMSTREAM_VENV=.venv-quix MEMSTREAM_EXTRAS=quix make install
    PYTHONPATH=. .venv/bin/python -m bench.peers --events 5000 --tenants 3 \
        --partitions 4 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from bench.peer_systems import (
    REPO,
    Encoded,
    InputWriter,
    Memstream,
    Quix,
    System,
    broker_uptime,
    committed_total,
    encode_events,
    start_phases,
    timed_pass,
    wait_done,
    wait_members,
    wait_rebuilt,
)
from bench.pipeline import Spread, aiokafka_copy, generate_workload, machine, memory_coverage
from streams.common.admin import ensure_topics
from streams.common.partitioning import partition_for_tenant
from streams.common.registry import register_all
from streams.common.settings import Settings, load_settings
from streams.sdk.events import TelemetryEvent

logger = logging.getLogger(__name__)

TARGET_VS_QUIX = 1.5  # score+dedupe events/s ÷ Quix Streams exactly-once events/s
TARGET_CPU_US = 150.0  # score+dedupe CPU µs per event, worker process
TARGET_TWO_WORKERS = 1.45  # 2 workers events/s ÷ 1 worker events/s
TARGET_START_S = 3.0  # worker start → first committed batch, models cached

def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def duplicates(events: Sequence[TelemetryEvent], *, reuse_interactions: bool = False
               ) -> list[TelemetryEvent]:
    """The events again under new event ids: exact duplicates of memorized content, asked
    again in new interactions (the events of one interaction share its new id). With
    ``reuse_interactions`` they keep their interaction ids, as in the records before
    ``ccc0f43``: then every pass adds its events to the same interactions, and score's join
    state for each grows by a pass's events, texts included (a real interaction is one
    exchange)."""
    fresh = {e.interaction_id: (e.interaction_id if reuse_interactions else str(uuid.uuid4()))
             for e in events}
    return [replace(e, event_id=str(uuid.uuid4()), interaction_id=fresh[e.interaction_id])
            for e in events]


# --- the run -----------------------------------------------------------------------------------
def tenant_spread(events: Sequence[TelemetryEvent], partitions: int) -> dict[str, Any]:
    """Per tenant its partition and event share; per worker of two (range assignment) its
    share; and the 2-worker ceiling it implies (all events ÷ the busier worker's)."""
    counts = Counter(e.tenant for e in events)
    where = {t: partition_for_tenant(t, partitions) for t in counts}
    half = (partitions + 1) // 2  # range: worker A gets the first half of the partitions
    load = [sum(c for t, c in counts.items() if (where[t] < half) == (w == 0)) for w in (0, 1)]
    return {"tenants": {t: {"partition": where[t], "events": counts[t]} for t in sorted(counts)},
            "worker_events": load, "ceiling": len(events) / max(load)}


def delete_topics(settings: Settings, prefixes: Sequence[str]) -> None:
    """Delete every topic of the run (memstream prefixes and Quix's changelogs)."""
    admin = AdminClient({**settings.kafka_client_config(), "log_level": 3})
    names = [t for t in admin.list_topics(timeout=30).topics if t.startswith(tuple(prefixes))]
    if names:
        for future in admin.delete_topics(names, request_timeout=30).values():
            future.result()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every phase in order; returns the machine-readable result."""
    run_id = uuid.uuid4().hex[:10]
    tmp = Path(tempfile.mkdtemp(prefix=f"memstream-peers-{run_id}-"))
    mine = load_settings(topic_prefix=f"bench-{run_id}.m.", partitions=args.partitions)
    peer = load_settings(topic_prefix=f"bench-{run_id}.q.", partitions=args.partitions)
    ms = Memstream("memstream", mine, f"bench-{run_id}-memstream", tmp)
    if args.quix_commit_every is None:  # the same records per commit as memstream's batches
        args.quix_commit_every = mine.batch_max_records
    qx = Quix(Path(args.quix_python), args.quix_commit_every, args.quix_commit_interval,
              "quix", peer, f"bench-{run_id}-quix", tmp)
    systems = [ms] if args.skip_quix else [ms, qx]
    result: dict[str, Any] = {"bench": "peers", "run_id": run_id, "machine": machine(),
                              "params": {k: str(v) for k, v in vars(args).items()},
                              "loadavg_start": os.getloadavg(),
                              "broker_uptime_s": broker_uptime(mine)}
    if (result["broker_uptime_s"] or BROKER_WARM_S) < BROKER_WARM_S:
        _say(f"warning: the broker started {result['broker_uptime_s']:.0f}s ago; a JVM still "
             "compiling its hot paths makes every system's figures slower (bench/RESULTS.md)")
    writer = None
    try:
        work = generate_workload(args.events, args.tenants, args.dup_ratio, args.seed)

        def again(events: Sequence[TelemetryEvent]) -> list[TelemetryEvent]:
            return duplicates(events, reuse_interactions=args.reuse_interactions)

        n = len(work.events)
        result["workload"] = {"events": n, "unique_texts": len(work.unique_texts),
                              "spread": tenant_spread(work.events, args.partitions)}
        for system in systems:
            ensure_topics(system.settings)
            register_all(system.settings, progress=lambda _line: None)
        scratch = mine.topic("bench-scratch")  # the aiokafka reference loop's output
        admin = AdminClient({**mine.kafka_client_config(), "log_level": 3})
        admin.create_topics([NewTopic(scratch, num_partitions=args.partitions,
                                      replication_factor=1)])[scratch].result()
        writer = InputWriter(mine)
        # First pass: memorize the events (memstream embeds each new text once).
        first = encode_events(mine, work.events)
        for system in systems:
            started = time.perf_counter()
            system.spawn(0)
            writer.put(system.settings.topic("telemetry.v1"), first)
            wait_done(system, args.timeout)
            result[f"{system.name}_first_pass_s"] = time.perf_counter() - started
            _say(f"{system.name}: first pass (start, memorize {n} events) "
                 f"{result[f'{system.name}_first_pass_s']:.1f}s")

        # Repeats: exact duplicates, both workers kept running, the order alternating.
        rates = {s.name: Spread() for s in systems}
        cpus = {s.name: Spread() for s in systems}
        brokers = {s.name: Spread() for s in systems}  # the broker's CPU per event, same passes
        txs: list[int | None] = []
        aio = Spread()
        spy = None
        if args.py_spy:  # sample memstream's worker over the timed repeats only
            spy = subprocess.Popen([args.py_spy, "record", "--pid", str(ms.procs[0].pid),
                                    "--rate", "200", "--format", "raw", "--nonblocking",
                                    "-o", args.py_spy_out], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        for i in range(args.repeats):
            dups = encode_events(mine, again(work.events))
            for system in systems if i % 2 == 0 else systems[::-1]:
                p = timed_pass(system, writer, dups, args.timeout)
                rates[system.name].values.append(p.per_s)
                cpus[system.name].values.append(p.cpu_us)
                brokers[system.name].values.append(p.broker_cpu_us)
                if system is ms:
                    txs.append(p.transactions)
            if not args.skip_copy:
                aio.values.append(aiokafka_copy(mine, mine.topic("telemetry.v1"),
                                                scratch, n)["total_per_s"])
            _say(f"repeat {i + 1}: " + ", ".join(
                f"{s.name} {rates[s.name].values[-1]:.0f}/s {cpus[s.name].values[-1]:.0f}µs"
                for s in systems) + (f", aiokafka copy {aio.values[-1]:.0f}/s" if aio.values
                                     else ""))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        result["rates"] = {k: v.values for k, v in rates.items()}
        result["cpu_us"] = {k: v.values for k, v in cpus.items()}
        result["broker_cpu_us"] = {k: v.values for k, v in brokers.items()}
        result["aiokafka_copy"] = aio.values
        result["memstream_transactions"] = txs

        # Start-up: worker stopped, a pass waiting, worker started → first committed batch.
        starts = {s.name: Spread() for s in systems}
        phases: dict[str, Spread] = {}
        for _ in range(args.repeats if args.start_events else 0):
            dups = encode_events(mine, again(work.events[: args.start_events]))
            for system in systems:
                system.stop()
                before = committed_total(system)
                writer.put(system.settings.topic("telemetry.v1"), dups)
                t0, wall0 = time.perf_counter(), time.time()
                system.spawn(0)
                first_at: list[float] = []
                wait_done(system, args.timeout, baseline=before, on_first=first_at.append)
                starts[system.name].values.append((first_at or [time.perf_counter()])[0] - t0)
                if system is ms:
                    for phase, at in start_phases(ms.logs / "memstream-0.log", wall0).items():
                        phases.setdefault(phase, Spread()).values.append(at)
            _say("start → first commit: " + ", ".join(
                f"{k} {v.values[-1]:.2f}s" for k, v in starts.items()))
        result["start_s"] = {k: v.values for k, v in starts.items()}
        result["start_phases_s"] = {k: v.values for k, v in phases.items()}

        # Two workers in one group against one, pass by pass and system by system (the load
        # on a shared machine moves between phases): the second worker leaves after each of
        # its passes (no static membership, so the group rebalances at once). After each
        # rebalance both systems get the same small warm-up pass before a timed one.
        pairs = {s.name: Pairs() for s in systems}

        def ready(system: System, since: float) -> None:
            """After a rebalance: memstream's workers have logged their stores restored
            (Quix restores a partition's state before its first record there), then a
            small untimed pass, so that no timed pass holds a new member's first batches."""
            if isinstance(system, Memstream):
                wait_rebuilt(system, since, args.timeout)
            writer.put(system.settings.topic("telemetry.v1"), encode_events(
                system.settings, again(work.events[:WARM_UP_EVENTS])))
            wait_done(system, args.timeout)

        for i in range(0 if args.skip_two else args.repeats):
            for system in systems:
                pair = pairs[system.name]

                def records(system: System = system) -> Encoded:
                    return encode_events(system.settings, again(work.events))

                pair.run(system, writer, records, args.timeout, ready)
                _say(f"pair {i + 1}, {system.name}: 1 worker {pair.one.values[-1]:.0f}/s "
                     f"{pair.one_cpu.values[-1]:.0f}µs, 2 workers {pair.two.values[-1]:.0f}/s "
                     f"{pair.two_cpu.values[-1]:.0f}µs ({pair.ratios[-1]:.2f}×)")
        mp = pairs["memstream"]
        result["two_workers"] = mp.as_dict()
        if "quix" in pairs:
            result["quix_two_workers"] = pairs["quix"].as_dict()
        result["spreads"] = {
            **{f"{k}_per_s": v.text() for k, v in rates.items()},
            **{f"{k}_cpu_us": v.text() for k, v in cpus.items()},
            **{f"{k}_broker_cpu_us": v.text() for k, v in brokers.items()},
            **{f"{k}_start_s": v.text(".2f") for k, v in starts.items()},
            **mp.spreads(""),
            **(pairs["quix"].spreads("quix_") if "quix" in pairs else {}),
            "aiokafka_copy_per_s": aio.text()}
        # Same work, checked: each system's memories account for every event it was given.
        result["coverage"] = {
            s.name: {**memory_coverage(s.settings),
                     "events_put": writer.counts[s.settings.topic("telemetry.v1")]}
            for s in systems}
        result["ratios"] = {
            "vs_quix": (rates["memstream"].median / rates["quix"].median
                        if "quix" in rates else None),
            "two_vs_one": statistics.median(mp.ratios) if mp.ratios else None,
            "quix_two_vs_one": (statistics.median(pairs["quix"].ratios)
                                if "quix" in pairs and pairs["quix"].ratios else None),
            "cpu_ceiling_two_vs_one": cpu_ceiling(os.cpu_count() or 1, mp.one_cpu,
                                                  mp.one_broker, mp.one)}
    finally:
        for system in systems:
            system.stop()
        if writer is not None:
            writer.close()
        if not args.keep_topics:
            try:
                delete_topics(mine, [mine.topic_prefix, peer.topic_prefix,
                                     f"changelog__{qx.group}"])
            except Exception:  # noqa: BLE001 - a leftover topic must not hide the result
                logger.warning("could not delete the topics of run %s", run_id)
        if args.keep_logs:
            _say(f"worker logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result["loadavg_end"] = os.getloadavg()
    return result


# The first run after `memstream dev up` (broker 5 min old) measured memstream 4,016/s at
# 200 µs and the broker at 110 µs an event; the next runs 7,140/s, 130 µs and 32 µs.
BROKER_WARM_S = 600.0
WARM_UP_EVENTS = 300  # the warm-up pass after a rebalance (a new member's first batches)


class Pairs:
    """One system's 2-worker pairs: a pass on one worker, then one on two."""

    def __init__(self) -> None:
        self.one, self.two = Spread(), Spread()
        self.one_cpu, self.two_cpu = Spread(), Spread()
        self.one_broker, self.two_broker = Spread(), Spread()
        self.ratios: list[float] = []
        self.transactions: list[int | None] = []

    def run(self, system: System, writer: InputWriter, records: Callable[[], Encoded],
            timeout_s: float, ready: Callable[[System, float], None]) -> None:
        """Time one pair; ``ready(system, since)`` waits out each rebalance."""
        single = timed_pass(system, writer, records(), timeout_s)
        change = time.time()
        system.spawn(1)
        wait_members(system, 2, timeout_s)
        ready(system, change)
        double = timed_pass(system, writer, records(), timeout_s)
        change = time.time()
        system.stop(1)
        wait_members(system, 1, timeout_s)
        ready(system, change)
        self.one.values.append(single.per_s)
        self.one_cpu.values.append(single.cpu_us)
        self.two.values.append(double.per_s)
        self.two_cpu.values.append(double.cpu_us)
        self.one_broker.values.append(single.broker_cpu_us)
        self.two_broker.values.append(double.broker_cpu_us)
        self.transactions.append(double.transactions)
        self.ratios.append(double.per_s / single.per_s)

    def as_dict(self) -> dict[str, Any]:
        """The pairs' values, for the JSON line."""
        return {"one_per_s": self.one.values, "one_cpu_us": self.one_cpu.values,
                "per_s": self.two.values, "cpu_us": self.two_cpu.values,
                "pair_ratios": self.ratios, "transactions": self.transactions,
                "one_broker_cpu_us": self.one_broker.values,
                "broker_cpu_us": self.two_broker.values}

    def spreads(self, prefix: str) -> dict[str, str]:
        """min / median / max of each, for the table."""
        return {f"{prefix}one_worker_per_s": self.one.text(),
                f"{prefix}one_worker_cpu_us": self.one_cpu.text(),
                f"{prefix}two_workers_per_s": self.two.text(),
                f"{prefix}two_workers_cpu_us": self.two_cpu.text(),
                f"{prefix}one_worker_broker_cpu_us": self.one_broker.text(),
                f"{prefix}two_workers_broker_cpu_us": self.two_broker.text(),
                f"{prefix}pair_ratios": Spread(self.ratios).text(".2f")}


def cpu_ceiling(cpus: int, worker_us: Spread, broker_us: Spread, per_s: Spread) -> float | None:
    """The most a second worker can add on this machine: its CPUs over what one event costs
    the worker and the broker together, as a multiple of the one-worker rate measured."""
    cost = worker_us.median + broker_us.median
    if not cost or not per_s.median:
        return None
    return cpus * 1e6 / cost / per_s.median


def print_table(r: dict[str, Any]) -> None:
    """The human-readable summary."""
    m, sp, ra = r["machine"], r["spreads"], r["ratios"]
    spread = r["workload"]["spread"]
    print()
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, Python {m['python']}, confluent-kafka "
          f"{m['confluent_kafka']} / librdkafka {m['librdkafka']}; load average "
          f"{'/'.join(f'{x:.2f}' for x in r['loadavg_start'])} at start, "
          f"{'/'.join(f'{x:.2f}' for x in r['loadavg_end'])} at end"
          + (f"; broker up {r['broker_uptime_s'] / 60:.0f} min at start"
             if r.get("broker_uptime_s") is not None else ""))
    print(f"workload: {r['workload']['events']} events per pass, tenants "
          + ", ".join(f"{t}→p{v['partition']} ({v['events']})"
                      for t, v in spread["tenants"].items())
          + f"; 2 workers split {spread['worker_events']}, ceiling {spread['ceiling']:.2f}")
    print()
    print("| measurement (min / **median** / max) | value | ratio | target |")
    print("|---|---|---|---|")
    vs = f"{ra['vs_quix']:.2f}" if ra["vs_quix"] else ""
    two = f"{ra['two_vs_one']:.2f}" if ra["two_vs_one"] else ""
    quix_two = f"{ra['quix_two_vs_one']:.2f}" if ra.get("quix_two_vs_one") else ""
    tx1, tx2 = r["memstream_transactions"], r["two_workers"]["transactions"]
    rows = [
        ("memstream score+dedupe, events/s", sp["memstream_per_s"], vs, f">= {TARGET_VS_QUIX}"),
        ("Quix Streams exactly-once, events/s", sp.get("quix_per_s", "—"), "", ""),
        ("memstream CPU µs/event", sp["memstream_cpu_us"], "", f"<= {TARGET_CPU_US:.0f}"),
        ("Quix Streams CPU µs/event", sp.get("quix_cpu_us", "—"), "", ""),
        ("broker (Kafka) CPU µs/event, memstream passes", sp["memstream_broker_cpu_us"], "", ""),
        ("broker (Kafka) CPU µs/event, Quix passes", sp.get("quix_broker_cpu_us", "—"), "", ""),
        ("2-worker pairs: 1 worker, events/s", sp["one_worker_per_s"], "", ""),
        ("2-worker pairs: 2 workers, events/s", sp["two_workers_per_s"], "", ""),
        ("2-worker pairs: 2 ÷ 1 per pair", sp["pair_ratios"], two, f">= {TARGET_TWO_WORKERS}"),
        ("2-worker pairs: CPU µs/event, 1 worker", sp["one_worker_cpu_us"], "", ""),
        ("2-worker pairs: CPU µs/event, 2 workers", sp["two_workers_cpu_us"], "", ""),
        ("2-worker pairs: broker CPU µs/event, 1 / 2 workers",
         f"{sp['one_worker_broker_cpu_us']} / {sp['two_workers_broker_cpu_us']}", "", ""),
        ("Quix 2-worker pairs: 1 worker / 2 workers, events/s",
         f"{sp.get('quix_one_worker_per_s', '—')} / {sp.get('quix_two_workers_per_s', '—')}",
         "", ""),
        ("Quix 2-worker pairs: 2 ÷ 1 per pair", sp.get("quix_pair_ratios", "—"), quix_two, ""),
        ("Quix 2-worker pairs: CPU µs/event, 1 / 2 workers",
         f"{sp.get('quix_one_worker_cpu_us', '—')} / {sp.get('quix_two_workers_cpu_us', '—')}",
         "", ""),
        ("2 ÷ 1 the CPUs allow (CPUs ÷ (worker + broker) µs ÷ 1-worker rate)", "",
         f"{ra['cpu_ceiling_two_vs_one']:.2f}" if ra.get("cpu_ceiling_two_vs_one") else "",
         ""),
        ("memstream transactions per pass, 1 worker / 2 workers",
         f"{tx1} / {tx2}", "", ""),
        ("memstream start → first commit, s", sp["memstream_start_s"], "",
         f"<= {TARGET_START_S:.0f}"),
        *((f"  memstream start → {phase}, s", Spread(at).text(".2f"), "", "")
          for phase, at in r["start_phases_s"].items()),
        ("Quix start → first commit, s", sp.get("quix_start_s", "—"), "", ""),
        ("reference: plain aiokafka copy, events/s", sp["aiokafka_copy_per_s"], "", ""),
    ]
    for name, value, ratio, target in rows:
        print(f"| {name} | {value} | {ratio} | {target} |")
    print()
    for name, c in r["coverage"].items():
        verdict = "all" if c["events_covered"] == c["events_put"] else "MISMATCH:"
        print(f"{name}: memories.v1 holds {c['memories']:,} memories covering {verdict} "
              f"{c['events_covered']:,} of the {c['events_put']:,} events put in")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="events per pass")
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--dup-ratio", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start-events", type=int, default=500,
                        help="events waiting when a worker starts (0: no start-up phase)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per pass, seconds")
    parser.add_argument("--quix-python", default=str(REPO / ".venv-quix/bin/python"))
    parser.add_argument("--quix-commit-every", type=int, default=None,
                        help="default: memstream's batch_max_records (MEMSTREAM_BATCH_MAX_RECORDS)")
    parser.add_argument("--quix-commit-interval", type=float, default=0.1, help="seconds")
    parser.add_argument("--skip-quix", action="store_true")
    parser.add_argument("--skip-copy", action="store_true", help="no aiokafka reference loop")
    parser.add_argument("--skip-two", action="store_true", help="no 2-worker phase")
    parser.add_argument("--py-spy", help="py-spy binary: profile memstream's worker over "
                        "the repeats (collapsed stacks to --py-spy-out)")
    parser.add_argument("--py-spy-out", default="peers-memstream.txt")
    parser.add_argument("--reuse-interactions", action="store_true",
                        help="repeats keep the events' interaction ids (the records before "
                             "ccc0f43): score's join state grows every pass")
    parser.add_argument("--keep-topics", action="store_true")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not args.skip_quix and not Path(args.quix_python).exists():
        sys.exit(f"no {args.quix_python}: MEMSTREAM_VENV=.venv-quix MEMSTREAM_EXTRAS=quix "
                 "make install (or --skip-quix)")
    result = run(args)
    print_table(result)
    print(json.dumps(result, default=str, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
