"""Topic provisioning from the one declaration."""

from __future__ import annotations

import time

from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from streams.common.admin import admin_client, ensure_topics
from streams.common.settings import Settings
from streams.common.topics import TOPICS


def test_provisioning_creates_declared_topics_then_changes_nothing(
    stack_settings: Settings,
) -> None:
    first = ensure_topics(stack_settings)
    assert sorted(first.created) == sorted(stack_settings.topic(t.base) for t in TOPICS)
    second = ensure_topics(stack_settings)
    assert second.created == [] and second.conflicts == []
    assert sorted(second.unchanged) == sorted(first.created)

    admin = admin_client(stack_settings)
    voice = stack_settings.topic("voice.v1")
    memories = stack_settings.topic("memories.v1")
    meta = admin.list_topics(timeout=10).topics
    assert len(meta[voice].partitions) == stack_settings.partitions
    res = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in (voice, memories)]
    configs = {r.name: f.result() for r, f in admin.describe_configs(res).items()}
    assert configs[voice]["max.message.bytes"].value == str(16 * 1024 * 1024)
    assert configs[voice]["cleanup.policy"].value == "delete"
    assert configs[memories]["cleanup.policy"].value == "compact"


def test_conflicting_existing_topic_is_reported_not_changed(stack_settings: Settings) -> None:
    ensure_topics(stack_settings)
    admin = admin_client(stack_settings)
    name = stack_settings.topic("telemetry.v1")
    resource = ConfigResource(
        ConfigResource.Type.TOPIC, name,
        incremental_configs=[ConfigEntry("retention.ms", "1000",
                                         incremental_operation=AlterConfigOpType.SET)],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result()
    # The controller has the change; a broker applies it from the metadata log a little
    # later (later still while it applies other changes, such as topics being deleted).
    deadline = time.monotonic() + 30
    described = ConfigResource(ConfigResource.Type.TOPIC, name)
    while admin.describe_configs([described])[described].result()["retention.ms"].value != "1000":
        assert time.monotonic() < deadline, "the altered retention.ms never became visible"
        time.sleep(0.2)
    report = ensure_topics(stack_settings)
    assert [(c.topic, c.setting, c.actual) for c in report.conflicts] == [
        (name, "retention.ms", "1000")
    ]
    assert "retention.ms" in str(report.conflicts[0])
