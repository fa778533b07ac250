"""Principals per role and the Kafka ACLs that confine each one (``memstream acls``).

- **producer** (the SDK): writes the input topics, nothing else; reads nothing.
- **worker** (the agents): reads the inputs and commands.v1, is the only writer of the
  derived topics (transcripts, scored, memories, summaries, dead letters), owns its
  changelog topics, consumer group and transactional ids.
- **serve** (the read service, `rebuild-index`): reads the derived topics, writes only
  commands.v1, and may look at (describe) the inputs and the worker's group offsets for
  read-your-writes.
- **admin** (topics, schemas, ACLs, replay, stats, exports): everything on the prefix.

So an SDK credential cannot forge or delete a memory: producing to memories.v1 or
commands.v1 is refused (TOPIC_AUTHORIZATION_FAILED). Kafka's READ and WRITE imply DESCRIBE.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from streams.common.admin import admin_client
from streams.common.exceptions import MemstreamError
from streams.common.settings import Settings
from streams.common.topics import TOPICS

INPUTS = ("telemetry.v1", "feedback.v1", "voice.v1")
DERIVED = ("transcripts.v1", "scored.v1", "memories.v1", "summaries.v1", "deadletter.v1")
COMMANDS = "commands.v1"
# Consumer groups of tools that assign partitions themselves (no offsets kept).
SERVE_GROUPS = ("memstream-serve-", "memstream-rebuild-")
WORKER_GROUPS = ("memstream-restore",)


class AclError(MemstreamError):
    """The broker refused to create an ACL or a credential."""


class Role(StrEnum):
    """Who connects to the cluster."""

    PRODUCER = "producer"
    WORKER = "worker"
    SERVE = "serve"
    ADMIN = "admin"


@dataclass(frozen=True)
class Grant:
    """One allowed operation on one resource (``prefixed``: every name starting so)."""

    resource: str  # topic, group, transactional-id, cluster
    name: str
    operation: str  # READ, WRITE, DESCRIBE, DESCRIBE_CONFIGS, CREATE, ALTER, ALL
    prefixed: bool = False

    def describe(self, principal: str) -> str:
        """One line: who may do what on which resource."""
        pattern = "prefixed" if self.prefixed else "literal"
        return f"{principal}: {self.operation} on {self.resource} {self.name!r} ({pattern})"


def grants(settings: Settings, role: Role) -> list[Grant]:
    """What ``role`` may do, for the topic prefix and app id of ``settings``."""
    t = settings.topic
    topics = [spec.base for spec in TOPICS]
    if role is Role.PRODUCER:
        return [Grant("topic", t(b), "WRITE") for b in INPUTS]
    if role is Role.WORKER:
        changelogs = t(f"{settings.app_id}-")
        return [
            *(Grant("topic", t(b), "READ") for b in (*INPUTS, "transcripts.v1", "scored.v1",
                                                      COMMANDS)),
            *(Grant("topic", t(b), "WRITE") for b in DERIVED),
            *(Grant("topic", t(b), op) for b in topics for op in ("DESCRIBE",
                                                                   "DESCRIBE_CONFIGS")),
            *(Grant("topic", changelogs, op, prefixed=True)
              for op in ("CREATE", "READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS")),
            Grant("group", settings.app_id, "READ"),
            *(Grant("group", g, "READ") for g in WORKER_GROUPS),
            Grant("transactional-id", f"{settings.app_id}-", "WRITE", prefixed=True),
        ]
    if role is Role.SERVE:
        return [
            *(Grant("topic", t(b), "READ") for b in DERIVED if b != "deadletter.v1"),
            Grant("topic", t(COMMANDS), "WRITE"),
            *(Grant("topic", t(b), "DESCRIBE") for b in topics),
            Grant("group", settings.app_id, "DESCRIBE"),
            *(Grant("group", g, "READ", prefixed=True) for g in SERVE_GROUPS),
        ]
    everything = t("") or "*"
    return [
        Grant("topic", everything, "ALL", prefixed=bool(settings.topic_prefix)),
        Grant("group", "*", "ALL"),
        Grant("transactional-id", "*", "ALL"),
        Grant("cluster", "kafka-cluster", "ALL"),
    ]


_RESOURCE = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
             "transactional-id": ResourceType.TRANSACTIONAL_ID, "cluster": ResourceType.BROKER}


def binding(grant: Grant, principal: str) -> AclBinding:
    """The admin-API form of ``grant`` for ``principal`` (``User:<name>``)."""
    return AclBinding(
        _RESOURCE[grant.resource], grant.name,
        ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL,
        principal, "*", AclOperation[grant.operation], AclPermissionType.ALLOW,
    )


def apply_acls(settings: Settings, principals: dict[Role, str]) -> list[str]:
    """Create the ACLs of each role for its principal (idempotent); return what was granted.
    ``settings`` must carry a principal allowed to alter ACLs (the admin)."""
    planned = [(g, p) for role, p in principals.items() for g in grants(settings, role)]
    admin = admin_client(settings)
    futures = admin.create_acls([binding(g, p) for g, p in planned],
                                request_timeout=settings.request_timeout_s)
    for acl, future in futures.items():
        try:
            future.result()
        except Exception as exc:
            raise AclError(f"creating the ACL {acl} failed: {exc}") from exc
    return [g.describe(p) for g, p in planned]


def upsert_user(settings: Settings, name: str, password: str, iterations: int = 8192) -> None:
    """Create (or change the password of) SCRAM-SHA-512 user ``name``."""
    admin = admin_client(settings)
    upsert = UserScramCredentialUpsertion(
        name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, iterations), password.encode())
    for future in admin.alter_user_scram_credentials(
            [upsert], request_timeout=settings.request_timeout_s).values():
        try:
            future.result()
        except Exception as exc:
            raise AclError(f"creating SCRAM user {name!r} failed: {exc}") from exc


def rpk_commands(settings: Settings, principals: dict[Role, str]) -> list[str]:
    """The same ACLs as ``rpk acl create`` commands, for Redpanda."""
    flags = {"topic": "--topic", "group": "--group", "transactional-id": "--transactional-id",
             "cluster": "--cluster"}
    lines = []
    for role, principal in principals.items():
        for g in grants(settings, role):
            target = flags[g.resource]
            if g.resource != "cluster":
                target += f" '{g.name}'"
            pattern = " --resource-pattern-type prefixed" if g.prefixed else ""
            lines.append(f"rpk acl create --allow-principal '{principal}' "
                         f"--operation {g.operation.lower().replace('_', '-')} {target}{pattern}")
    return lines
