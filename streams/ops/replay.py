"""``memstream replay``: reset the app so the next worker reprocesses from a point.

Like Kafka Streams' application reset tool: with no member of the app's consumer group
alive, it (1) moves the group's committed offsets of the chosen *source* topics to the
chosen point and those of the *intermediate* topics (written and read by the app:
scored.v1) to their end, so nothing is processed twice; (2) deletes the internal
changelog topics and (3) the worker's local state (``data_dir``), which hold the effects
of the records being replayed. The next ``memstream worker`` starts with empty stores
and reprocesses; deterministic ids make the memories it writes the same records again
(upserts of the same keys on memories.v1).

Partitions of a chosen topic that ``--from-offset`` does not name go back to their
beginning: the state is rebuilt for every partition, so each must be replayed from a
point the state can be rebuilt from. Source topics not chosen keep their offsets.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition

from streams.common.admin import admin_client
from streams.common.exceptions import MemstreamError
from streams.common.settings import Settings

SOURCE_TOPICS = ("voice.v1", "telemetry.v1", "feedback.v1")
INTERMEDIATE_TOPICS = ("transcripts.v1", "scored.v1")
# Read from the beginning on every replay: memorize (and summarize) re-apply every delete
# the users asked for, so a replayed memory that was deleted stays deleted.
DELETION_TOPICS = ("commands.v1",)


class ReplayRefusedError(MemstreamError):
    """The reset cannot run now (live group members, bad arguments)."""


@dataclass(frozen=True)
class ReplayRequest:
    """Where to replay from, for which topics."""

    topics: tuple[str, ...] = ()
    from_offsets: dict[int, int] = field(default_factory=dict)
    from_timestamp_ms: int | None = None
    to_latest: bool = False

    @classmethod
    def from_cli(cls, *, topics: list[str], from_offsets: list[str], from_timestamp: str | None,
                 to_earliest: bool, to_latest: bool) -> ReplayRequest:
        """Parse and check the command-line options."""
        chosen = sum(bool(x) for x in (from_offsets, from_timestamp, to_earliest, to_latest))
        if chosen > 1:
            raise ReplayRefusedError("give one of --from-offset, --from-timestamp, --to-earliest, "
                                     "--to-latest")
        offsets: dict[int, int] = {}
        for item in from_offsets:
            p, sep, o = item.partition(":")
            if not sep or not p.isdigit() or not o.isdigit():
                raise ReplayRefusedError(
                    f"--from-offset {item!r}: expected PARTITION:OFFSET, e.g. 0:1200"
                )
            offsets[int(p)] = int(o)
        if offsets and len(topics) != 1:
            raise ReplayRefusedError(
                "--from-offset needs exactly one --topic (offsets are per topic)")
        known = SOURCE_TOPICS + INTERMEDIATE_TOPICS
        for topic in topics:
            if topic not in known:
                raise ReplayRefusedError(f"--topic {topic!r}: the app reads {', '.join(known)}")
        ts = None
        if from_timestamp:
            try:
                when = datetime.fromisoformat(from_timestamp.replace("Z", "+00:00"))
            except ValueError:
                raise ReplayRefusedError(
                    f"--from-timestamp {from_timestamp!r}: not ISO 8601") from None
            ts = int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)
        return cls(tuple(topics), offsets, ts, to_latest)


@dataclass(frozen=True)
class OffsetReset:
    """One partition's committed offset, before and after."""

    topic: str
    partition: int
    current: int | None
    target: int
    why: str


@dataclass
class ReplayPlan:
    """What a reset will change."""

    group: str
    resets: list[OffsetReset]
    changelogs: list[str]
    state_dir: Path

    def describe(self) -> list[str]:
        """Human-readable lines."""
        lines = [f"consumer group {self.group}: no live members"]
        for r in self.resets:
            now = "none" if r.current is None else str(r.current)
            lines.append(f"  {r.topic}[{r.partition}]: {now} -> {r.target} ({r.why})")
        for topic in self.changelogs:
            lines.append(f"  delete changelog topic {topic}")
        exists = "" if self.state_dir.exists() else " (absent)"
        lines.append(f"  delete local state {self.state_dir}{exists}")
        return lines


def live_members(settings: Settings) -> list[str]:
    """Members of the app's consumer group, as ``client_id@host``."""
    admin = admin_client(settings)
    futures = admin.describe_consumer_groups([settings.app_id],
                                             request_timeout=settings.request_timeout_s)
    try:
        group = futures[settings.app_id].result()
    except KafkaException as exc:
        if "GROUP_ID_NOT_FOUND" in str(exc):
            return []
        raise
    return [f"{m.client_id}@{m.host}" for m in group.members or []]


def _refuse_if_live(settings: Settings) -> None:
    members = live_members(settings)
    if members:
        raise ReplayRefusedError(
            f"consumer group {settings.app_id} has {len(members)} live member(s): "
            f"{', '.join(members)}. Stop every `memstream worker` of app {settings.app_id} "
            f"first (a killed worker stays a member until its session times out, "
            f"{settings.session_timeout_ms} ms)."
        )


def plan_replay(settings: Settings, request: ReplayRequest) -> ReplayPlan:
    """Work out the new offsets; refuse while the group has live members."""
    _refuse_if_live(settings)
    consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.app_id,
                         "enable.auto.commit": False, "log_level": 3})
    try:
        resets: list[OffsetReset] = []
        chosen = request.topics or SOURCE_TOPICS
        others = tuple(t for t in INTERMEDIATE_TOPICS + DELETION_TOPICS if t not in chosen)
        for base in chosen + others:
            topic = settings.topic(base)
            meta = consumer.list_topics(topic, timeout=settings.request_timeout_s).topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            parts = sorted(meta.partitions)
            committed = {tp.partition: tp.offset for tp in consumer.committed(
                [TopicPartition(topic, p) for p in parts], timeout=settings.request_timeout_s)}
            marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                       timeout=settings.request_timeout_s)
                     for p in parts}
            targets = _targets(consumer, settings, topic, parts, marks, request,
                               intermediate=base not in chosen)
            for p in parts:
                target, why = targets[p]
                current = committed.get(p)
                resets.append(OffsetReset(topic, p, current if current and current >= 0 else None,
                                          target, why))
        changelogs = _changelogs(settings)
        return ReplayPlan(settings.app_id, resets, changelogs, settings.worker_data_dir)
    finally:
        consumer.close()


def _targets(consumer: Consumer, settings: Settings, topic: str, parts: list[int],
             marks: dict[int, tuple[int, int]], request: ReplayRequest,
             *, intermediate: bool) -> dict[int, tuple[int, str]]:
    if topic == settings.topic(DELETION_TOPICS[0]):
        return {p: (marks[p][0], "commands (deletes): from the beginning") for p in parts}
    if intermediate:
        return {p: (marks[p][1], "intermediate topic: to its end") for p in parts}
    if request.to_latest:
        return {p: (marks[p][1], "to latest") for p in parts}
    if request.from_timestamp_ms is not None:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, request.from_timestamp_ms) for p in parts],
            timeout=settings.request_timeout_s)
        return {tp.partition: (tp.offset if tp.offset >= 0 else marks[tp.partition][1],
                               "first record at or after the timestamp") for tp in found}
    out = {}
    for p in parts:
        low, high = marks[p]
        if p in request.from_offsets:
            out[p] = (min(max(request.from_offsets[p], low), high), "from offset")
        else:
            out[p] = (low, "earliest")
    return out


def _changelogs(settings: Settings) -> list[str]:
    prefix = settings.topic(f"{settings.app_id}-")
    topics = admin_client(settings).list_topics(timeout=settings.request_timeout_s).topics
    return sorted(t for t in topics if t.startswith(prefix) and t.endswith("-changelog"))


def run_replay(settings: Settings, plan: ReplayPlan,
               progress: Callable[[str], None] = lambda _m: None) -> None:
    """Apply a plan: offsets, changelog topics, local state (refusing if members appeared)."""
    _refuse_if_live(settings)
    admin = admin_client(settings)
    tps = [TopicPartition(r.topic, r.partition, r.target) for r in plan.resets]
    if tps:
        [future] = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(plan.group, tps)],
            request_timeout=settings.request_timeout_s).values()
        future.result()
        progress(f"offsets of {len(tps)} partition(s) reset")
    if plan.changelogs:
        for topic, future in admin.delete_topics(
                plan.changelogs, operation_timeout=settings.request_timeout_s).items():
            try:
                future.result()
            except KafkaException as exc:
                if "UNKNOWN_TOPIC" not in str(exc):
                    raise
            progress(f"deleted {topic}")
        _wait_gone(settings, plan.changelogs)
    if plan.state_dir.exists():
        shutil.rmtree(plan.state_dir)
        progress(f"deleted {plan.state_dir}")


def _wait_gone(settings: Settings, topics: list[str], timeout_s: float = 60) -> None:
    """Topic deletion is asynchronous: wait until no broker lists them (a worker started
    earlier would otherwise find half-deleted changelogs)."""
    admin = admin_client(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = set(admin.list_topics(timeout=settings.request_timeout_s).topics)
        if not listed & set(topics):
            return
        time.sleep(0.5)
    raise ReplayRefusedError(f"changelog topics still listed after {timeout_s:.0f}s: {topics}")


__all__ = ["ReplayPlan", "ReplayRequest", "live_members", "plan_replay", "run_replay"]
