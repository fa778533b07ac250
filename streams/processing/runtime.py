"""The exactly-once runtime: poll a batch, run the agents over it, commit it in one transaction.

One transactional producer per worker (transactional id ``<app_id>-<worker_id>``) carries a
batch's output records, its state-store changelog records and its consumed offsets
(``send_offsets_to_transaction`` with the consumer's group metadata, KIP-447). The batch
commits as a whole or not at all; state stores apply their writes only after the commit. A
restarted worker's ``init_transactions`` aborts whatever its crashed predecessor left open,
and the group's committed offsets say where to resume.

This module is the poll loop and the decoding of a batch; the rest is one concept a module:
``api`` (what agents use), ``transaction`` (the commit protocol), ``policy`` (what happens
when agent code raises), ``outputs`` (producing outputs and dead letters), ``rebalance``
(partition ownership, store restore, the agents' rebuild), ``clients`` (the Kafka clients),
``faults`` (crash-test injection), ``watchdog`` (liveness, stuck calls).

Why not faust-streaming's ``exactly_once``: its transaction manager chooses the producer
by the *destination* partition, and it commits without flushing buffered changelog
writes; a kill -9 probe against Kafka 4.1 lost and duplicated records (docs/exactly-once.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaException, Message, TopicPartition

from streams.common.codec import AvroCodec, CodecError
from streams.common.exceptions import MemstreamError
from streams.common.observability import WorkerMetrics
from streams.common.registry import latest_schema, registry_client
from streams.common.settings import Settings
from streams.common.topics import topic_spec
from streams.processing.api import Agent, InputRecord
from streams.processing.clients import GroupConsumer, TransactionalProducer, make_clients
from streams.processing.context import WorkerBatchContext
from streams.processing.deadletter import DeadLetterReason, SourceCoordinates
from streams.processing.outputs import Outputs
from streams.processing.policy import ErrorPolicy
from streams.processing.rebalance import Ownership, Restore, changelog_topic
from streams.processing.restore import restore_stores
from streams.processing.store import PartitionStore
from streams.processing.transaction import Transactions, offset, slot
from streams.processing.watchdog import Liveness, Watchdog

logger = logging.getLogger(__name__)

LAG_REPORT_INTERVAL_S = 5.0


class Runtime:
    """Runs agents over their input topics with exactly-once transactions."""

    def __init__(
        self,
        settings: Settings,
        agents: Sequence[Agent],
        metrics: WorkerMetrics | None = None,
        codec: AvroCodec | None = None,
        *,
        watchdog: Watchdog | None = None,
        liveness: Liveness | None = None,
        clients: tuple[GroupConsumer, TransactionalProducer] | None = None,
        restore: Restore = restore_stores,
    ) -> None:
        self.settings = settings
        self.watchdog = watchdog
        self.liveness = liveness or Liveness(settings.liveness_timeout_s)
        self.agents = list(agents)
        self.metrics = metrics or WorkerMetrics()
        self.codec = codec or AvroCodec(registry_client(settings))
        self.stores: dict[tuple[str, int], PartitionStore] = {}
        self._dispatch: dict[str, list[Agent]] = defaultdict(list)
        for agent in self.agents:
            for base in agent.inputs:
                self._dispatch[settings.topic(base)].append(agent)
        self._base = {settings.topic(t): t for a in self.agents for t in a.inputs}
        for agent in self.agents:
            limit = agent.max_records_per_batch
            if limit is not None and limit < 1:  # 0 would leave every batch empty: a stall
                raise ValueError(f"agent {agent.name}: max_records_per_batch must be >= 1 "
                                 f"or None, got {limit}")
        # Per input topic, the (agent, limit) of its agents that limit their batches.
        self._limits = {
            full: limited for full, agents in self._dispatch.items()
            if (limited := [(a.name, a.max_records_per_batch) for a in agents
                            if a.max_records_per_batch is not None])
        }
        self._readers = {
            full: latest_schema(topic_spec(base).schema) for full, base in self._base.items()
        }
        self._timeout = settings.request_timeout_s
        self._last_lag = 0.0
        self._failed_agent: str | None = None
        self.consumer, self.producer = clients or make_clients(settings)
        self.transactions = Transactions(
            self.producer, self.consumer, self.stores, metrics=self.metrics,
            liveness=self.liveness, timeout_s=self._timeout, on_reset=self._rebuild_agents,
            guard=self._guard,
        )
        self.ownership = Ownership(
            settings, self.agents, self.stores, self.transactions.emit_changelog, restore,
            on_progress=self.liveness.progress,
        )
        self.outputs = Outputs(settings, self.codec, self.transactions)
        self.policy = ErrorPolicy(
            self._process_batch, self.transactions, self.outputs,
            on_processing_error=settings.on_processing_error,
            failed_agent=lambda: self._failed_agent,
            first_agent=lambda topic: self._dispatch[topic][0].name,
        )

    def changelog_topic(self, store: str) -> str:
        """The compacted topic that backs ``store``."""
        return changelog_topic(self.settings, store)

    # -- main loop ----------------------------------------------------------------------
    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Process until ``stop`` is set; a fatal Kafka error propagates (crash-only: the
        supervisor restarts the worker, and the restart is exactly-once)."""
        with self._guard("init_transactions", self._timeout * 4):
            self.producer.init_transactions(self._timeout * 4)
        self.consumer.subscribe(
            list(self._dispatch),
            on_assign=self.ownership.on_assign, on_revoke=self.ownership.on_revoke,
        )
        if on_ready:
            on_ready()
        self.liveness.beat(in_hand=False)
        try:
            self._loop(stop)
        finally:
            self.liveness.stopped()
            self.close()

    def _loop(self, stop: threading.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            msgs = self.consumer.consume(
                num_messages=self.settings.batch_max_records,
                timeout=self.settings.batch_max_wait_s,
            )
            self._maybe_report_lag()
            msgs = self._within_limits([m for m in msgs if self._usable(m)])
            self.liveness.beat(in_hand=bool(msgs))
            if not msgs:
                continue
            try:
                self.policy.handle(msgs)
                backoff = 0.5
            except MemstreamError as exc:
                if not exc.retriable:
                    raise
                # Infrastructure (registry, model, broker): nothing of the batch was
                # committed and its partitions were rewound; wait and read it again.
                logger.warning("batch failed, retrying in %.1fs: %s", backoff, exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    @contextmanager
    def _guard(self, call: str, timeout_s: float) -> Iterator[None]:
        """The watchdog's deadline for a blocking client call (librdkafka's transactional
        calls have been seen blocking far past their timeout after a broker restart); its
        return counts as the loop moving (``Liveness.call_returned``)."""
        with nullcontext() if self.watchdog is None else self.watchdog.deadline(call, timeout_s):
            yield
        self.liveness.call_returned()

    def _usable(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return True
        if err.fatal():
            raise KafkaException(err)
        logger.warning("consumer: %s", err.str())
        return False

    def _within_limits(self, msgs: list[Message]) -> list[Message]:
        """End the batch where an agent's ``max_records_per_batch`` is reached: from its
        first record left out, a partition of that agent's inputs is left out whole and
        rewound there (read again for the next batch); other partitions' records stay."""
        if not self._limits:
            return msgs
        taken: dict[str, int] = defaultdict(int)
        cut: dict[tuple[str, int], int] = {}
        kept: list[Message] = []
        for msg in msgs:
            at = slot(msg)
            if at in cut:
                continue
            limits = self._limits.get(at[0], ())
            if any(taken[name] >= limit for name, limit in limits):
                cut[at] = offset(msg)
                continue
            for name, _limit in limits:
                taken[name] += 1
            kept.append(msg)
        for (topic, partition), first in cut.items():
            self.consumer.seek(TopicPartition(topic, partition, first))
        return kept

    # -- one batch --------------------------------------------------------------------------
    def _process_batch(self, msgs: list[Message]) -> None:
        """One attempt at ``msgs``: the agents, in one transaction (see ``transaction``)."""
        self._failed_agent = None
        self.transactions.run_batch(msgs, lambda: self._run_agents(msgs))

    def _run_agents(self, msgs: list[Message]) -> None:
        ctx = WorkerBatchContext(self.stores, self.outputs)
        by_agent = self._decode(msgs, ctx)
        for agent in self.agents:
            records = by_agent.get(agent.name)
            if records:
                ctx.agent = self._failed_agent = agent.name
                agent.process(records, ctx)
        self._failed_agent = None

    def _decode(
        self, msgs: list[Message], ctx: WorkerBatchContext
    ) -> dict[str, list[InputRecord]]:
        by_agent: dict[str, list[InputRecord]] = defaultdict(list)
        counts = self.transactions.counts
        for msg in msgs:
            (full, partition), at = slot(msg), offset(msg)
            base = self._base[full]
            raw = msg.value()
            for agent in self._dispatch[full]:
                counts[("events_in", agent.name, base)] += 1
            try:
                value = self._decode_value(raw, full)
            except CodecError as exc:
                ctx.agent = self._dispatch[full][0].name
                source = SourceCoordinates(full, partition, at, msg.key(), raw)
                self.outputs.dead_letter_at(
                    source, DeadLetterReason.UNDECODABLE, str(exc), ctx.agent, None
                )
                continue
            kind, stamp = msg.timestamp()
            record = InputRecord(base, partition, at, msg.key(), raw, value,
                                 stamp if kind != TIMESTAMP_NOT_AVAILABLE else None)
            for agent in self._dispatch[full]:
                by_agent[agent.name].append(record)
        return by_agent

    def _decode_value(self, raw: bytes | None, full_topic: str) -> dict[str, Any]:
        if raw is None:
            raise CodecError("null value (a Kafka tombstone) on an event topic")
        return self.codec.decode(raw, self._readers[full_topic])

    def _rebuild_agents(self) -> None:
        self.ownership.rebuild_agents()

    # -- lag and shutdown -------------------------------------------------------------------
    def _maybe_report_lag(self) -> None:
        """Consumer lag per agent and input, from the high watermarks the fetches already
        brought (no broker round trip on the processing thread)."""
        now = time.monotonic()
        if now - self._last_lag < LAG_REPORT_INTERVAL_S:
            return
        self._last_lag = now
        totals: dict[tuple[str, str], int] = defaultdict(int)
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    continue  # nothing fetched from this partition yet
                lag = max(0, high - tp.offset) if tp.offset >= 0 else high
                for agent in self._dispatch.get(tp.topic, []):
                    totals[(agent.name, self._base[tp.topic])] += lag
        except KafkaException as exc:
            logger.warning("lag report failed: %s", exc)
            return
        for (agent_name, base), lag in totals.items():
            self.metrics.consumer_lag.labels(agent_name, base).set(lag)
        self.liveness.set_backlog(sum(totals.values()))

    def close(self) -> None:
        """Leave the group, close the stores, then the agents (``Agent.close``)."""
        try:
            with self._guard("consumer close", self._timeout):
                self.consumer.close()
        finally:
            for store in self.stores.values():
                store.close()
            self.stores.clear()
            for agent in self.agents:
                try:
                    agent.close()
                except Exception:  # noqa: BLE001 - one agent's failure must not skip the others
                    logger.exception("closing agent %s failed", agent.name)

