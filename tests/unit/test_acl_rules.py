"""The ACLs per role, without a broker: who may write which topic."""

from __future__ import annotations

from streams.common.settings import load_settings
from streams.common.topics import TOPICS
from streams.ops.acls import Role, grants, rpk_commands

SETTINGS = load_settings(topic_prefix="prod.", app_id="ms")


def writable(role: Role) -> set[str]:
    return {g.name for g in grants(SETTINGS, role)
            if g.resource == "topic" and g.operation in ("WRITE", "ALL") and not g.prefixed}


def readable(role: Role) -> set[str]:
    return {g.name for g in grants(SETTINGS, role)
            if g.resource == "topic" and g.operation == "READ" and not g.prefixed}


def test_every_topic_has_one_writing_role_besides_the_admin() -> None:
    for spec in TOPICS:
        name = SETTINGS.topic(spec.base)
        writers = [r for r in (Role.PRODUCER, Role.WORKER, Role.SERVE) if name in writable(r)]
        assert len(writers) == 1, (name, writers)
    assert writable(Role.PRODUCER) == {"prod.telemetry.v1", "prod.feedback.v1", "prod.voice.v1"}
    assert writable(Role.SERVE) == {"prod.commands.v1"}
    assert "prod.memories.v1" in writable(Role.WORKER)


def test_the_sdk_reads_nothing_and_the_read_service_no_input() -> None:
    assert readable(Role.PRODUCER) == set()
    assert not readable(Role.SERVE) & {"prod.telemetry.v1", "prod.feedback.v1",
                                       "prod.voice.v1", "prod.commands.v1"}
    prefixed = [g for g in grants(SETTINGS, Role.WORKER) if g.prefixed]
    assert {(g.resource, g.name) for g in prefixed} == {
        ("topic", "prod.ms-"), ("transactional-id", "ms-")}


def test_rpk_commands_cover_the_same_grants() -> None:
    principals = {Role.PRODUCER: "User:a", Role.WORKER: "User:b", Role.SERVE: "User:c"}
    lines = rpk_commands(SETTINGS, principals)
    assert len(lines) == sum(len(grants(SETTINGS, r)) for r in principals)
    assert ("rpk acl create --allow-principal 'User:c' --operation write --topic "
            "'prod.commands.v1'") in lines
    assert all(line.startswith("rpk acl create --allow-principal 'User:") for line in lines)
