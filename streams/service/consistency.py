"""Read-your-writes: wait until the replica reflects a write the SDK made.

The producer's consistency token is ``topic:partition:offset`` of the event it wrote, on
an *input* topic (telemetry.v1 usually); the replica consumes memories.v1, several hops
later. Every topic is partitioned by tenant with one partition count, so the write's
effects stay on the same partition number at every hop. The gate walks the hops:

1. the app's consumer group (``app_id``: the worker) has committed an offset past the
   token on its topic: the event was processed, and its outputs (scored.v1) were
   committed in the same transaction;
2. for the next topic (scored.v1, and transcripts.v1 after voice.v1) take its high
   watermark *now*, which lies above those outputs (the stable end may not yet: the
   transaction's markers reach its partitions one by one), and wait until the group has
   consumed every committed data record below it (the committed offset may stop short of
   the end by transaction markers, so the check reads the log from the committed offset
   with read_committed and looks for a data record before the end);
3. take the high watermarks of memories.v1 and summaries.v1 and wait until the replica
   has applied every committed record below them (summaries come from the same
   transactions).

A token on commands.v1 (what DELETE returns) waits for steps 1 and 3; one on memories.v1
or summaries.v1 itself waits for step 3 only.
If the wait passes ``consistency_timeout_s`` the request gets 503 with the stage it
waited at and the replica's lag.

(About 400 lines: the hops above are one protocol; split, its steps would read out of order.)

Bounded for any caller: a token may name only the partition of the caller's tenant and at
most ``MAX_POSITIONS`` positions; every broker call is bounded by the time left, so a wait
ends at its deadline; waiting is async (no worker thread is held while waiting; the checks
run on a few threads of the gate's own) and one tenant has at most
``consistency_max_waiters`` waits at once (429 beyond), so waiting requests never starve
the requests of others.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

import anyio
import anyio.to_thread
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.common.exceptions import MemstreamError
from streams.common.partitioning import partition_for_tenant
from streams.common.settings import Settings
from streams.common.topics import topic_spec
from streams.service.feed import ReplicaFeed
from streams.service.replica import MEMORIES, SUMMARIES

# What the app writes next from each input topic (same partition number).
NEXT_HOP = {
    "voice.v1": "transcripts.v1",
    "telemetry.v1": "scored.v1",
    "transcripts.v1": "scored.v1",
    "feedback.v1": "scored.v1",
    "scored.v1": MEMORIES,
    # A delete (what DELETE returns a token for): memorize applies it to memories.v1, and
    # summarize re-derives the summaries that quoted it, in the same transaction.
    "commands.v1": MEMORIES,
}
MAX_POSITIONS = 8  # a producer's token names one position; a client may join a few
MAX_TOKEN_CHARS = 1024
_MAX_OFFSET = 2**63 - 1
_POLL_S = 0.05
_CHECK_THREADS = 4

T = TypeVar("T")


class InvalidConsistencyTokenError(MemstreamError):
    """A consistency token that does not parse, names an unknown topic, another tenant's
    partition, or more positions than allowed."""


class NotCaughtUpError(MemstreamError):
    """The replica has not reached a token within the bounded wait (answered 503; the SDK
    raises its own ``streams.sdk.client.NotCaughtUpError`` for that answer)."""

    retriable = True

    def __init__(self, message: str, *, stage: str, lag: int) -> None:
        super().__init__(message)
        self.stage = stage
        self.lag = lag


class TooManyWaitersError(MemstreamError):
    """The tenant already has ``consistency_max_waiters`` requests waiting on tokens
    (answered 429; the SDK raises ``streams.sdk.client.TooManyWaitersError``)."""

    retriable = True


@dataclass(frozen=True)
class Position:
    """One ``topic:partition:offset`` of a consistency token (base topic name)."""

    base: str
    partition: int
    offset: int


def _shown(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def parse_token(token: str, prefix: str = "", *, partitions: int | None = None,
                tenant_partition: int | None = None) -> list[Position]:
    """Positions of a token: ``topic:partition:offset`` entries separated by commas.

    With ``partitions``, a partition must lie in ``[0, partitions)``; with
    ``tenant_partition``, every position must be on that partition (the caller's tenant's)."""
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidConsistencyTokenError(
            f"consistency token: {len(token)} characters, over the limit of "
            f"{MAX_TOKEN_CHARS}")
    parts = token.split(",")
    if len(parts) > MAX_POSITIONS:
        raise InvalidConsistencyTokenError(
            f"consistency token: {len(parts)} positions, over the limit of "
            f"{MAX_POSITIONS}")
    found: list[Position] = []
    for part in parts:
        part = part.strip()
        topic, _, rest = part.rpartition(":")
        topic, _, partition = topic.rpartition(":")
        try:
            base = topic_spec(topic, prefix).base
            position = Position(base, int(partition), int(rest))
        except (KeyError, ValueError):
            raise InvalidConsistencyTokenError(
                f"consistency token {_shown(part)}: expected "
                "<topic>:<partition>:<offset> of a memstream topic") from None
        if base not in NEXT_HOP and base not in (MEMORIES, SUMMARIES):
            raise InvalidConsistencyTokenError(
                f"consistency token {_shown(part)}: {base} does not feed the read "
                "service")
        top = partitions if partitions is not None else 2**31
        if not 0 <= position.partition < top:
            raise InvalidConsistencyTokenError(
                f"consistency token {_shown(part)}: partition {_shown(partition, 20)}"
                f" is outside 0..{top - 1}")
        if not 0 <= position.offset <= _MAX_OFFSET:
            raise InvalidConsistencyTokenError(
                f"consistency token {_shown(part)}: offset {_shown(rest, 24)} is "
                f"outside 0..{_MAX_OFFSET}")
        if tenant_partition is not None and position.partition != tenant_partition:
            raise InvalidConsistencyTokenError(
                f"consistency token {_shown(part)}: names partition "
                f"{position.partition}, but your tenant's records are on partition "
                f"{tenant_partition}: a token may name only those")
        found.append(position)
    return found


class OffsetSource(Protocol):
    """The broker reads the gate makes; each bounded by ``timeout`` seconds."""

    def committed(self, topic: str, partition: int, timeout: float) -> int:
        """The worker group's committed offset (0 when none)."""
        ...

    def end(self, topic: str, partition: int, timeout: float) -> int:
        """The partition's high watermark now (records of open transactions included)."""
        ...

    def no_data_between(self, topic: str, partition: int, start: int, end: int,
                        timeout: float) -> bool:
        """Whether no committed data record lies in ``[start, end)``."""
        ...

    def partition_count(self, topic: str, timeout: float) -> int | None:
        """The topic's partition count, or None when the broker did not say."""
        ...

    def close(self) -> None:
        """Release the clients."""
        ...


class KafkaOffsets:
    """The gate's broker reads: one consumer for the worker group's offsets (never joins the
    group; its reads are thread-safe), and a small pool of read_committed probes, one per
    check thread, so no check waits on another's lock.

    The offsets consumer reads ``read_uncommitted``, so :meth:`end` is the high watermark,
    not the last stable offset. A transaction's commit markers reach its partitions one by
    one: the group's offsets may already show it committed while the marker on memories.v1
    is still on its way, and the stable end there still lies *below* the transaction's
    records. A wait up to that end passed with the records unapplied (a DELETE answered
    ``applied`` while recall still found the memory). The high watermark includes them;
    the read_committed probe then waits for their marker."""

    def __init__(self, settings: Settings, probes: int = _CHECK_THREADS) -> None:
        self._base = {**settings.kafka_client_config(), "log_level": 3,
                      "enable.auto.commit": False}
        self._group = Consumer({**self._base, "group.id": settings.app_id,
                                "isolation.level": "read_uncommitted"})
        self._probes: queue.SimpleQueue[Consumer] = queue.SimpleQueue()
        self._made = 0
        self._max = probes
        self._lock = threading.Lock()
        self._all: list[Consumer] = []

    def committed(self, topic: str, partition: int, timeout: float) -> int:
        [tp] = self._group.committed([TopicPartition(topic, partition)], timeout=timeout)
        return max(tp.offset, 0)

    def end(self, topic: str, partition: int, timeout: float) -> int:
        """The high watermark: every record written, committed or not (see the class)."""
        _low, high = self._group.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=timeout, cached=False)
        return int(high)

    def partition_count(self, topic: str, timeout: float) -> int | None:
        meta = self._group.list_topics(topic, timeout=timeout)
        found = meta.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            return None
        return len(found.partitions)

    def no_data_between(self, topic: str, partition: int, start: int, end: int,
                        timeout: float) -> bool:
        """False while an open transaction holds the stable end lower (or on timeout)."""
        probe = self._take_probe(timeout)
        if probe is None:
            return False
        try:
            probe.assign([TopicPartition(topic, partition, start)])
            deadline = time.monotonic() + min(0.5, timeout)
            while time.monotonic() < deadline:
                msg = probe.poll(min(0.1, max(deadline - time.monotonic(), 0.001)))
                if msg is None:
                    continue
                err = msg.error()
                if err is None or err.code() == KafkaError._PARTITION_EOF:
                    return (msg.offset() or 0) >= end
            return False
        finally:
            probe.unassign()
            self._probes.put(probe)

    def _take_probe(self, timeout: float) -> Consumer | None:
        with self._lock:
            if self._probes.empty() and self._made < self._max:
                self._made += 1
                probe = Consumer({
                    **self._base, "group.id": f"memstream-serve-probe-{uuid.uuid4()}",
                    "isolation.level": "read_committed", "enable.partition.eof": True,
                    "fetch.wait.max.ms": 20,
                })
                self._all.append(probe)
                return probe
        try:
            return self._probes.get(timeout=max(timeout, 0.001))
        except queue.Empty:
            return None

    def close(self) -> None:
        self._group.close()
        for probe in self._all:
            probe.close()


class ConsistencyGate:
    """Waits (bounded) until the replica covers given positions."""

    def __init__(self, settings: Settings, feed: ReplicaFeed,
                 offsets: OffsetSource | None = None) -> None:
        self.settings = settings
        self.feed = feed
        self.offsets: OffsetSource = offsets or KafkaOffsets(settings)
        self._waiting: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        self._limiters: dict[int, anyio.CapacityLimiter] = {}
        self.partitions = self._partition_count()

    def close(self) -> None:
        """Release the consumers."""
        self.offsets.close()

    def _partition_count(self) -> int:
        """Partitions of every memstream topic: the broker's count, or the setting when the
        broker does not answer now (asked once, at start, off the request path)."""
        try:
            found = self.offsets.partition_count(self.settings.topic(MEMORIES), timeout=5.0)
        except Exception:  # noqa: BLE001 - unreachable now: the declared count
            found = None
        return found or self.settings.partitions

    def positions(self, tenant: str, token: str) -> list[Position]:
        """The token's positions, refused unless on ``tenant``'s own partition."""
        count = self.partitions
        return parse_token(token, self.settings.topic_prefix, partitions=count,
                           tenant_partition=partition_for_tenant(tenant, count))

    @contextmanager
    def _slot(self, tenant: str) -> Iterator[None]:
        cap = self.settings.consistency_max_waiters
        with self._count_lock:
            if self._waiting[tenant] >= cap:
                raise TooManyWaitersError(
                    f"tenant already has {cap} requests waiting on consistency tokens "
                    f"(MEMSTREAM_CONSISTENCY_MAX_WAITERS); retry later")
            self._waiting[tenant] += 1
        try:
            yield
        finally:
            with self._count_lock:
                self._waiting[tenant] -= 1
                if not self._waiting[tenant]:
                    del self._waiting[tenant]

    async def wait(self, tenant: str, positions: list[Position],
                   timeout_s: float | None = None) -> None:
        """Return once every position is reflected, or raise NotCaughtUpError at the deadline
        (TooManyWaitersError at once when the tenant has too many waits)."""
        timeout = self.settings.consistency_timeout_s if timeout_s is None else timeout_s
        with self._slot(tenant):
            deadline = time.monotonic() + timeout
            for position in positions:
                await self._wait_one(position, deadline)

    async def _wait_one(self, pos: Position, deadline: float) -> None:
        base, partition = pos.base, pos.partition
        if base in (MEMORIES, SUMMARIES):
            await self._until(deadline, f"replica applying {base}[{partition}]@{pos.offset}",
                              lambda t: self._replica_reached(base, partition, pos.offset + 1, t))
            return
        topic = self.settings.topic(base)
        stage = (f"worker group {self.settings.app_id} committing past "
                 f"{topic}[{partition}]@{pos.offset}")
        await self._until(deadline, stage,
                          lambda t: self.offsets.committed(topic, partition, t) > pos.offset)
        while True:
            base = NEXT_HOP[base]
            topic = self.settings.topic(base)
            end = await self._io(deadline, f"reading the end of {topic}[{partition}]",
                                 partial(self.offsets.end, topic, partition))
            if base == MEMORIES:
                # The same transactions that wrote memories wrote the session summaries.
                summaries = self.settings.topic(SUMMARIES)
                summaries_end = await self._io(
                    deadline, f"reading the end of {summaries}[{partition}]",
                    partial(self.offsets.end, summaries, partition))
                await self._until(
                    deadline, f"replica applying {topic}[{partition}] up to {end}",
                    partial(self._replica_reached, MEMORIES, partition, end))
                await self._until(
                    deadline, f"replica applying {summaries}[{partition}] up to {summaries_end}",
                    partial(self._replica_reached, SUMMARIES, partition, summaries_end))
                return
            await self._until(deadline, f"worker group {self.settings.app_id} consuming "
                              f"{topic}[{partition}] up to {end}",
                              partial(self._group_consumed, topic, partition, end))

    async def _until(self, deadline: float, stage: str,
                     done: Callable[[float], bool]) -> None:
        while not await self._io(deadline, stage, done):
            if time.monotonic() + _POLL_S >= deadline:
                raise self._late(stage)
            await asyncio.sleep(_POLL_S)

    async def _io(self, deadline: float, stage: str, call: Callable[[float], T]) -> T:
        """``call(time_left)`` on one of the gate's threads; NotCaughtUpError at the deadline,
        whether the call is still queued or running (a running call is bounded by the time
        it was given, so it ends soon after)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._late(stage)
        try:
            with anyio.fail_after(left):
                return await anyio.to_thread.run_sync(
                    call, left, limiter=self._limiter(), abandon_on_cancel=True)
        except TimeoutError:
            raise self._late(stage) from None
        except KafkaException as exc:
            # The broker did not answer within the time left (librdkafka's own _TIMED_OUT)
            # or refused the read: the write is not known to be visible yet, a 503 that
            # names the stage, never a 500.
            raise self._late(f"{stage} (broker: {_kafka_reason(exc)})") from None

    def _limiter(self) -> anyio.CapacityLimiter:
        # One per event loop (a limiter belongs to the loop that made it).
        loop = id(asyncio.get_running_loop())
        limiter = self._limiters.get(loop)
        if limiter is None:
            limiter = self._limiters[loop] = anyio.CapacityLimiter(_CHECK_THREADS)
        return limiter

    def _late(self, stage: str) -> NotCaughtUpError:
        return NotCaughtUpError(f"not caught up: waiting for {stage}", stage=stage,
                           lag=self.feed.lag())

    def _replica_reached(self, base: str, partition: int, end: int, timeout: float) -> bool:
        start = self.feed.replica.position(base, partition)
        return start >= end or self.offsets.no_data_between(
            self.settings.topic(base), partition, start, end, timeout)

    def _group_consumed(self, topic: str, partition: int, end: int, timeout: float) -> bool:
        committed = self.offsets.committed(topic, partition, timeout)
        return committed >= end or self.offsets.no_data_between(topic, partition, committed,
                                                                end, timeout)


def _kafka_reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)
