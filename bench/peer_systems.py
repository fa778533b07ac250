"""bench.peers' moving parts: the worker processes under test, the input, and progress.

A system is one or more worker processes of memstream (``python -m streams worker``) or of
the Quix Streams peer (``bench.quix_peer`` in the quix venv) over one topic prefix; a pass
is put into its telemetry in one transaction and timed until its group has committed it all.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from bench.pipeline import GroupProgress
from streams.common.codec import AvroCodec
from streams.common.partitioning import partition_for_tenant
from streams.common.registry import latest_schema, registry_client, subject_for
from streams.common.settings import Settings
from streams.common.topics import topic_spec
from streams.sdk.events import TelemetryEvent, as_record
from streams.sdk.producer import validated

REPO = Path(__file__).resolve().parents[1]
_CLK = os.sysconf("SC_CLK_TCK")

Encoded = list[tuple[int, bytes, bytes]]  # (partition, key, value) per event


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (``/proc/<pid>/stat``)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _CLK


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after the command name (field 3, the state, is index 0)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


@functools.cache
def _broker_pid(state_dir: Path) -> int | None:
    from streams.common.settings import load_settings
    from streams.ops.devstack.stack import DevStack

    found = [c.pid for c in DevStack(load_settings(state_dir=state_dir)).status()
             if c.name == "kafka" and c.ours]
    return found[0] if found else None


def broker_pid(settings: Settings) -> int | None:
    """The local dev stack's Kafka process (``memstream dev up``), if it runs here."""
    return _broker_pid(settings.state_dir)


def broker_uptime(settings: Settings) -> float | None:
    """Seconds since the local broker started (None when it does not run here)."""
    pid = broker_pid(settings)
    if pid is None:
        return None
    started = int(_stat_fields(pid)[19]) / _CLK
    return float(Path("/proc/uptime").read_text().split()[0]) - started


def broker_cpu(settings: Settings) -> float:
    """The broker's CPU seconds so far (0 when it does not run on this machine)."""
    pid = broker_pid(settings)
    return cpu_seconds(pid) if pid is not None else 0.0


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
        self.counts: Counter[str] = Counter()  # events put, per topic

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
        self.counts[topic] += len(records)
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
    broker_cpu_us: float  # the Kafka broker's CPU in the same interval, per event


def timed_pass(system: System, writer: InputWriter, records: Encoded,
               timeout_s: float) -> Pass:
    """Put ``records`` into the system's telemetry in one transaction; time until done."""
    count = system.transactions if isinstance(system, Memstream) else None
    tx0 = count() if count else 0
    cpu0, broker0 = system.cpu(), broker_cpu(system.settings)
    t0 = writer.put(system.settings.topic("telemetry.v1"), records)
    t1 = wait_done(system, timeout_s)
    cpu, broker = system.cpu() - cpu0, broker_cpu(system.settings) - broker0
    n = len(records)
    return Pass(n / (t1 - t0), cpu / n * 1e6, t1 - t0, count() - tx0 if count else None,
                broker / n * 1e6)


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


def _log_entries(log: Path, since: float) -> Iterator[tuple[float, str]]:
    """(epoch seconds, message) of a worker's JSON log lines written at or after ``since``."""
    if not log.exists():
        return
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["ts"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if at >= since:
            yield at, str(entry.get("msg", ""))


def start_phases(log: Path, since: float) -> dict[str, float]:
    """Seconds from ``since`` (epoch) to each start-up point the worker logged after it."""
    found: dict[str, float] = {}
    for at, msg in _log_entries(log, since):
        for phase, marker in START_PHASES:
            if phase not in found and msg.startswith(marker):
                found[phase] = at - since
    return found


def wait_rebuilt(system: System, since: float, timeout_s: float) -> None:
    """Until every running memstream worker has logged its memory index rebuilt after
    ``since`` (epoch): the stores of the partitions it now holds are restored and open, so a
    timed pass does not include a rebalance's restore."""
    deadline = time.perf_counter() + timeout_s
    marker = START_PHASES[-1][1]
    while time.perf_counter() < deadline:
        system.check()
        if all(any(msg.startswith(marker) for _at, msg in
                   _log_entries(system.logs / f"{system.name}-{i}.log", since))
               for i in range(len(system.procs))):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{system.name}: a worker never rebuilt after the rebalance")
