"""Peers benchmark: memstream's score+dedupe path against Quix Streams on the same work.

The same generated telemetry (bench.pipeline's generator), the same broker and registry,
workers kept running. memstream runs ``memstream worker --agents score,memorize`` as a
process; the peer is ``bench.quix_peer`` (Quix Streams, exactly-once, RocksDB state) in the
quix venv. Each gets its own topic prefix. A first pass memorizes the events (memstream
embeds them; the peer uses stand-in vectors); then each repeat puts the same events again
under new event ids — exact duplicates, so nothing is embedded — into each system's
telemetry in ONE input transaction (read_committed: the worker sees them all at once) and
times commit of that input → the group has committed every input and every scored record
(the memories.v1 output commits with the latter). CPU per event is the worker process's
utime+stime over that window. Then: two memstream workers in one group against one, and
worker start → first committed batch. Prints a table and, last, one JSON line.

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
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.pipeline import GroupProgress, Spread, aiokafka_copy, generate_workload, machine
from streams.common.codec import AvroCodec
from streams.common.partitioning import partition_for_tenant
from streams.common.registry import latest_schema, register_all, registry_client, subject_for
from streams.common.settings import Settings, load_settings
from streams.common.topics import topic_spec
from streams.ops.admin import ensure_topics
from streams.sdk.events import TelemetryEvent, as_record
from streams.sdk.producer import validated

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
TARGET_VS_QUIX = 1.5  # score+dedupe events/s ÷ Quix Streams exactly-once events/s
TARGET_CPU_US = 150.0  # score+dedupe CPU µs per event, worker process
TARGET_TWO_WORKERS = 1.45  # 2 workers events/s ÷ 1 worker events/s
TARGET_START_S = 3.0  # worker start → first committed batch, models cached
_CLK = os.sysconf("SC_CLK_TCK")

Encoded = list[tuple[int, bytes, bytes]]  # (partition, key, value) per event


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


# --- the systems under test ---------------------------------------------------------------------
class System:
    """A worker process (or several) of one system, consuming one prefix's topics."""

    def __init__(self, name: str, settings: Settings, group: str, logs: Path) -> None:
        self.name = name
        self.settings = settings
        self.group = group
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def command(self, index: int) -> tuple[list[str], dict[str, str]]:
        """The worker command line and environment of worker ``index``."""
        raise NotImplementedError

    def spawn(self, index: int = 0) -> subprocess.Popen[bytes]:
        """Start worker ``index``; its stderr goes to a log file of the run."""
        cmd, env = self.command(index)
        log = (self.logs / f"{self.name}-{index}.log").open("ab")
        proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO), **env},
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        while len(self.procs) <= index:
            self.procs.append(proc)
        self.procs[index] = proc
        return proc

    def check(self) -> None:
        """Raise if a worker died."""
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                tail = (self.logs / f"{self.name}-{i}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} worker {i} exited {proc.returncode}:\n{tail}")

    def cpu(self) -> float:
        """CPU seconds of all its running workers."""
        return sum(cpu_seconds(p.pid) for p in self.procs if p.poll() is None)

    def stop(self, index: int | None = None) -> None:
        """SIGTERM (the workers finish their batch and commit), then wait."""
        chosen = self.procs if index is None else [self.procs[index]]
        for proc in chosen:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in chosen:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = [p for p in self.procs if p not in chosen]  # only the last one, or all


class Memstream(System):
    """``memstream worker --agents score,memorize`` (JSON logs)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.ports: dict[int, int] = {}  # worker index → its /metrics port

    def command(self, index: int) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        with socket.socket() as sock:  # a free port for the worker's /metrics
            sock.bind(("127.0.0.1", 0))
            self.ports[index] = sock.getsockname()[1]
        return ([sys.executable, "-m", "streams", "worker", "--agents", "score,memorize"],
                {"MEMSTREAM_TOPIC_PREFIX": s.topic_prefix, "MEMSTREAM_PARTITIONS":
                 str(s.partitions), "MEMSTREAM_APP_ID": self.group,
                 "MEMSTREAM_WORKER_ID": f"bench-{index}",
                 # worker 0 is static (restarts keep its partitions); the second worker
                 # leaves the group when stopped, so one worker gets all at once.
                 "MEMSTREAM_STATIC_MEMBERSHIP": "true" if index == 0 else "false",
                 "MEMSTREAM_METRICS_PORT": str(self.ports[index]),
                 "MEMSTREAM_DATA_DIR": str(self.logs / f"data-{index}")})

    def transactions(self) -> int:
        """Committed transactions of its running workers (their /metrics)."""
        total = 0
        for index, proc in enumerate(self.procs):
            if proc.poll() is not None:
                continue
            url = f"http://127.0.0.1:{self.ports[index]}/metrics"
            with urllib.request.urlopen(url, timeout=5) as reply:
                for line in reply.read().decode().splitlines():
                    if line.startswith('memstream_transactions_total{outcome="commit"}'):
                        total += int(float(line.rsplit(" ", 1)[1]))
        return total


class Quix(System):
    """``bench.quix_peer`` in the quix venv."""

    def __init__(self, python: Path, commit_every: int, commit_interval: float,
                 *args: Any) -> None:
        super().__init__(*args)
        self.python = python
        self.commit = (commit_every, commit_interval)

    def command(self, index: int) -> tuple[list[str], dict[str, str]]:
        return ([str(self.python), "-m", "bench.quix_peer", "--prefix",
                 self.settings.topic_prefix, "--group", self.group, "--state-dir",
                 str(self.logs / f"quix-state-{index}"), "--commit-every", str(self.commit[0]),
                 "--commit-interval", str(self.commit[1])], {})


# --- input and progress ------------------------------------------------------------------------
def encode_events(settings: Settings, events: Sequence[TelemetryEvent]) -> Encoded:
    """Each event as the SDK would send it: validated, Avro, partitioned by tenant."""
    spec = topic_spec("telemetry.v1", settings.topic_prefix)
    schema = latest_schema(spec.schema)
    codec = AvroCodec(registry_client(settings), auto_register=settings.auto_register_schemas)
    subject = subject_for(settings, spec)
    out: Encoded = []
    for event in events:
        record = validated(settings, spec, schema, as_record(event))
        out.append((partition_for_tenant(record["tenant"], settings.partitions),
                    str(record[spec.key_field]).encode(), codec.encode(subject, schema, record)))
    return out


class InputWriter:
    """Puts a whole pass into a topic in one transaction: a read_committed worker sees none
    of it until the commit, then all of it (the clock starts at the commit)."""

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer({
            **settings.kafka_client_config(), "transactional.id": f"bench-input-{uuid.uuid4()}",
            "enable.idempotence": True, "acks": "all", "compression.type": settings.compression,
            "linger.ms": 5, "log_level": 3})
        self._producer.init_transactions(30)

    def put(self, topic: str, records: Encoded) -> float:
        """Produce and commit; return when it committed (perf_counter)."""
        self._producer.begin_transaction()
        for partition, key, value in records:
            while True:
                try:
                    self._producer.produce(topic, value, key, partition=partition)
                    break
                except BufferError:
                    self._producer.poll(0.05)
        self._producer.commit_transaction(60)
        return time.perf_counter()

    def close(self) -> None:
        """Flush (nothing is pending after a commit)."""
        self._producer.flush(10)


def wait_done(system: System, timeout_s: float, *, baseline: int | None = None,
              on_first: Callable[[float], None] | None = None) -> float:
    """Poll until the group has committed all its input and all scored records; return when.

    Every pass ends with a transaction marker, so a partition is done at end - 1. With
    ``on_first``, it is called at the first poll where the input's committed total passed
    ``baseline``.
    """
    s = system.settings
    telemetry, scored = s.topic("telemetry.v1"), s.topic("scored.v1")
    progress = GroupProgress(s, system.group)
    started = time.perf_counter()
    try:
        while True:
            system.check()
            now = time.perf_counter()
            if now - started > timeout_s:
                raise TimeoutError(f"{system.name}: not done after {timeout_s:.0f}s")
            committed = progress.committed(telemetry)
            if on_first is not None and baseline is not None and sum(committed) > baseline:
                on_first(now)
                on_first = None
            if _caught_up(committed, progress.ends(telemetry)) and _caught_up(
                    progress.committed(scored), progress.ends(scored)):
                return time.perf_counter()
            time.sleep(0.02)
    finally:
        progress.close()


def _caught_up(committed: list[int], ends: list[int]) -> bool:
    return all(e == 0 or c >= e - 1 for c, e in zip(committed, ends, strict=True))


def committed_total(system: System) -> int:
    """The group's committed input offsets, summed."""
    progress = GroupProgress(system.settings, system.group)
    try:
        return sum(progress.committed(system.settings.topic("telemetry.v1")))
    finally:
        progress.close()


@dataclass
class Pass:
    """One timed pass of one system."""

    per_s: float
    cpu_us: float
    seconds: float
    transactions: int | None


def timed_pass(system: System, writer: InputWriter, records: Encoded,
               timeout_s: float) -> Pass:
    """Put ``records`` into the system's telemetry in one transaction; time until done."""
    count = system.transactions if isinstance(system, Memstream) else None
    tx0 = count() if count else 0
    cpu0 = system.cpu()
    t0 = writer.put(system.settings.topic("telemetry.v1"), records)
    t1 = wait_done(system, timeout_s)
    cpu = system.cpu() - cpu0
    n = len(records)
    return Pass(n / (t1 - t0), cpu / n * 1e6, t1 - t0, count() - tx0 if count else None)


def duplicates(events: Sequence[TelemetryEvent]) -> list[TelemetryEvent]:
    """The events again under new event ids: exact duplicates of memorized content."""
    return [replace(e, event_id=str(uuid.uuid4())) for e in events]


def wait_members(system: System, members: int, timeout_s: float) -> None:
    """Until the group is stable with ``members`` members that each hold partitions."""
    admin = AdminClient({**system.settings.kafka_client_config(), "log_level": 3})
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        system.check()
        group = admin.describe_consumer_groups([system.group])[system.group].result()
        held = [m for m in group.members if m.assignment and m.assignment.topic_partitions]
        if str(group.state).endswith("STABLE") and len(held) == members:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{system.name}: group never had {members} members with partitions")


# What a starting memstream worker logs, in order (JSON log lines with "ts" and "msg").
START_PHASES = (("imports + model loaded", "loaded embedding model"),
                ("topics, processor, init_transactions", "ready"),
                ("group join + stores + index rebuild", "memory indexes rebuilt"))


def start_phases(log: Path, since: float) -> dict[str, float]:
    """Seconds from ``since`` (epoch) to each start-up point the worker logged after it."""
    found: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["ts"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if at < since:
            continue
        for phase, marker in START_PHASES:
            if phase not in found and str(entry.get("msg", "")).startswith(marker):
                found[phase] = at - since
    return found


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
    qx = Quix(Path(args.quix_python), args.quix_commit_every, args.quix_commit_interval,
              "quix", peer, f"bench-{run_id}-quix", tmp)
    systems = [ms] if args.skip_quix else [ms, qx]
    result: dict[str, Any] = {"bench": "peers", "run_id": run_id, "machine": machine(),
                              "params": {k: str(v) for k, v in vars(args).items()},
                              "loadavg_start": os.getloadavg()}
    writer = None
    try:
        work = generate_workload(args.events, args.tenants, args.dup_ratio, args.seed)
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
        txs: list[int | None] = []
        aio = Spread()
        spy = None
        if args.py_spy:  # sample memstream's worker over the timed repeats only
            spy = subprocess.Popen([args.py_spy, "record", "--pid", str(ms.procs[0].pid),
                                    "--rate", "200", "--format", "raw", "--nonblocking",
                                    "-o", args.py_spy_out], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        for i in range(args.repeats):
            dups = encode_events(mine, duplicates(work.events))
            for system in systems if i % 2 == 0 else systems[::-1]:
                p = timed_pass(system, writer, dups, args.timeout)
                rates[system.name].values.append(p.per_s)
                cpus[system.name].values.append(p.cpu_us)
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
        result["aiokafka_copy"] = aio.values
        result["memstream_transactions"] = txs

        # Start-up: worker stopped, a pass waiting, worker started → first committed batch.
        starts = {s.name: Spread() for s in systems}
        phases: dict[str, Spread] = {}
        for _ in range(args.repeats if args.start_events else 0):
            dups = encode_events(mine, duplicates(work.events[: args.start_events]))
            for system in systems:
                system.stop()
                before = committed_total(system)
                writer.put(system.settings.topic("telemetry.v1"), dups)
                t0, wall0 = time.perf_counter(), time.time()
                system.spawn(0)
                first_at: list[float] = []
                wait_done(system, args.timeout, baseline=before, on_first=first_at.append)
                first = (first_at or [time.perf_counter()])[0] - t0
                starts[system.name].values.append(first)
                if system is ms:
                    for phase, at in start_phases(ms.logs / "memstream-0.log", wall0).items():
                        phases.setdefault(phase, Spread()).values.append(at)
            _say("start → first commit: " + ", ".join(
                f"{k} {v.values[-1]:.2f}s" for k, v in starts.items()))
        result["start_s"] = {k: v.values for k, v in starts.items()}
        result["start_phases_s"] = {k: v.values for k, v in phases.items()}

        # Two memstream workers in one group against one, pass by pass (the load on a shared
        # machine moves between phases): the second worker leaves after each of its passes
        # (no static membership, so the group rebalances at once).
        one, two = Spread(), Spread()
        one_cpu, two_cpu = Spread(), Spread()
        pair_ratios: list[float] = []
        two_tx: list[int | None] = []
        for i in range(0 if args.skip_two else args.repeats):
            single = timed_pass(ms, writer, encode_events(mine, duplicates(work.events)),
                                args.timeout)
            ms.spawn(1)
            wait_members(ms, 2, args.timeout)
            double = timed_pass(ms, writer, encode_events(mine, duplicates(work.events)),
                                args.timeout)
            ms.stop(1)
            wait_members(ms, 1, args.timeout)
            one.values.append(single.per_s)
            one_cpu.values.append(single.cpu_us)
            two.values.append(double.per_s)
            two_cpu.values.append(double.cpu_us)
            two_tx.append(double.transactions)
            pair_ratios.append(double.per_s / single.per_s)
            _say(f"pair {i + 1}: 1 worker {single.per_s:.0f}/s {single.cpu_us:.0f}µs, 2 workers "
                 f"{double.per_s:.0f}/s {double.cpu_us:.0f}µs ({pair_ratios[-1]:.2f}×)")
        result["two_workers"] = {"one_per_s": one.values, "one_cpu_us": one_cpu.values,
                                 "per_s": two.values, "cpu_us": two_cpu.values,
                                 "pair_ratios": pair_ratios, "transactions": two_tx}
        result["spreads"] = {
            **{f"{k}_per_s": v.text() for k, v in rates.items()},
            **{f"{k}_cpu_us": v.text() for k, v in cpus.items()},
            **{f"{k}_start_s": v.text(".2f") for k, v in starts.items()},
            "two_workers_per_s": two.text(), "two_workers_cpu_us": two_cpu.text(),
            "one_worker_per_s": one.text(), "one_worker_cpu_us": one_cpu.text(),
            "pair_ratios": Spread(pair_ratios).text(".2f"),
            "aiokafka_copy_per_s": aio.text()}
        result["ratios"] = {
            "vs_quix": (rates["memstream"].median / rates["quix"].median
                        if "quix" in rates else None),
            "two_vs_one": statistics.median(pair_ratios) if pair_ratios else None}
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


def print_table(r: dict[str, Any]) -> None:
    """The human-readable summary."""
    m, sp, ra = r["machine"], r["spreads"], r["ratios"]
    spread = r["workload"]["spread"]
    print()
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, Python {m['python']}, confluent-kafka "
          f"{m['confluent_kafka']} / librdkafka {m['librdkafka']}; load average "
          f"{'/'.join(f'{x:.2f}' for x in r['loadavg_start'])} at start, "
          f"{'/'.join(f'{x:.2f}' for x in r['loadavg_end'])} at end")
    print(f"workload: {r['workload']['events']} events per pass, tenants "
          + ", ".join(f"{t}→p{v['partition']} ({v['events']})"
                      for t, v in spread["tenants"].items())
          + f"; 2 workers split {spread['worker_events']}, ceiling {spread['ceiling']:.2f}")
    print()
    print("| measurement (min / **median** / max) | value | ratio | target |")
    print("|---|---|---|---|")
    vs = f"{ra['vs_quix']:.2f}" if ra["vs_quix"] else ""
    two = f"{ra['two_vs_one']:.2f}" if ra["two_vs_one"] else ""
    tx1, tx2 = r["memstream_transactions"], r["two_workers"]["transactions"]
    rows = [
        ("memstream score+dedupe, events/s", sp["memstream_per_s"], vs, f">= {TARGET_VS_QUIX}"),
        ("Quix Streams exactly-once, events/s", sp.get("quix_per_s", "—"), "", ""),
        ("memstream CPU µs/event", sp["memstream_cpu_us"], "", f"<= {TARGET_CPU_US:.0f}"),
        ("Quix Streams CPU µs/event", sp.get("quix_cpu_us", "—"), "", ""),
        ("2-worker pairs: 1 worker, events/s", sp["one_worker_per_s"], "", ""),
        ("2-worker pairs: 2 workers, events/s", sp["two_workers_per_s"], "", ""),
        ("2-worker pairs: 2 ÷ 1 per pair", sp["pair_ratios"], two, f">= {TARGET_TWO_WORKERS}"),
        ("2-worker pairs: CPU µs/event, 1 worker", sp["one_worker_cpu_us"], "", ""),
        ("2-worker pairs: CPU µs/event, 2 workers", sp["two_workers_cpu_us"], "", ""),
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
    parser.add_argument("--quix-commit-every", type=int, default=256,
                        help="as memstream's batch_max_records")
    parser.add_argument("--quix-commit-interval", type=float, default=0.1, help="seconds")
    parser.add_argument("--skip-quix", action="store_true")
    parser.add_argument("--skip-copy", action="store_true", help="no aiokafka reference loop")
    parser.add_argument("--skip-two", action="store_true", help="no 2-worker phase")
    parser.add_argument("--py-spy", help="py-spy binary: profile memstream's worker over "
                        "the repeats (collapsed stacks to --py-spy-out)")
    parser.add_argument("--py-spy-out", default="peers-memstream.txt")
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
