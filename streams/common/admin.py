"""Create memstream's topics from their one declaration and report any that differ."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, TopicMetadata

from streams.common.exceptions import UnavailableError
from streams.common.settings import Settings
from streams.common.topics import COMPACT_WITHIN_A_DAY, TOPICS, TopicSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicConflict:
    """A topic that exists with a setting other than the declared one."""

    topic: str
    setting: str
    declared: str
    actual: str

    def __str__(self) -> str:
        return (
            f"{self.topic}: {self.setting} is {self.actual}, declared {self.declared} "
            "(left as it is: change it by hand or declare the new value)"
        )


@dataclass
class ProvisionReport:
    """What ``ensure_topics`` did."""

    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[TopicConflict] = field(default_factory=list)


def admin_client(settings: Settings) -> AdminClient:
    """An admin client with the broker settings (SASL/TLS included)."""
    return AdminClient({**settings.kafka_client_config(), "log_level": 3})


def _existing_topics(admin: AdminClient, settings: Settings) -> dict[str, TopicMetadata]:
    timeout = settings.request_timeout_s
    try:
        return dict(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise UnavailableError(
            f"broker {settings.bootstrap_servers} unreachable after {timeout:.0f}s: {exc}"
        ) from exc


def ensure_topics(
    settings: Settings, specs: tuple[TopicSpec, ...] = TOPICS, admin: AdminClient | None = None
) -> ProvisionReport:
    """Create missing topics; leave existing ones alone and report where they differ."""
    admin = admin or admin_client(settings)
    timeout = settings.request_timeout_s
    existing = _existing_topics(admin, settings)
    report = ProvisionReport()
    missing = [s for s in specs if settings.topic(s.base) not in existing]
    if missing:
        new = [
            NewTopic(
                settings.topic(s.base),
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                config=s.config(),
            )
            for s in missing
        ]
        for name, future in admin.create_topics(new, request_timeout=timeout).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: created concurrently
                    raise
            report.created.append(name)
    for spec in specs:
        name = settings.topic(spec.base)
        if name in report.created:
            continue
        conflicts = _conflicts(admin, settings, spec, len(existing[name].partitions), timeout)
        if conflicts:
            report.conflicts.extend(conflicts)
        else:
            report.unchanged.append(name)
    return report


def _conflicts(
    admin: AdminClient, settings: Settings, spec: TopicSpec, partitions: int, timeout: float
) -> list[TopicConflict]:
    name = settings.topic(spec.base)
    found: list[TopicConflict] = []
    if partitions != settings.partitions:
        found.append(TopicConflict(name, "partitions", str(settings.partitions), str(partitions)))
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    configs = admin.describe_configs([resource], request_timeout=timeout)[resource].result()
    for key, declared in spec.config().items():
        actual = configs[key].value if key in configs else None
        if actual != declared:
            found.append(TopicConflict(name, key, declared, str(actual)))
    return found


def ensure_changelog_topics(settings: Settings, topics: list[str]) -> list[str]:
    """Create missing compacted changelog topics (same partition count as the data topics)."""
    admin = admin_client(settings)
    timeout = settings.request_timeout_s
    existing = _existing_topics(admin, settings)
    missing = [t for t in topics if t not in existing]
    if missing:
        new = [
            NewTopic(
                t,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                # The stores hold memory text too: what a delete replaced goes within a day.
                config={"cleanup.policy": "compact", "max.message.bytes": str(2 * 1024 * 1024),
                        **COMPACT_WITHIN_A_DAY},
            )
            for t in missing
        ]
        for future in admin.create_topics(new, request_timeout=timeout).values():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS
                    raise
    return missing
