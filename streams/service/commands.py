"""User commands go through the log: the read service writes them to commands.v1 and the
memorize agent applies them, so memorize stays the only writer of memories.v1."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from confluent_kafka import Producer

from streams.common.codec import AvroCodec
from streams.common.exceptions import DeliveryError, UnavailableError
from streams.common.partitioning import partition_for_tenant
from streams.common.registry import latest_schema, registry_client, subject_for
from streams.common.settings import Settings
from streams.common.topics import memory_key, topic_spec

logger = logging.getLogger(__name__)

COMMANDS = "commands.v1"


def delete_command(tenant: str, memory: dict[str, Any], requested_by: str) -> dict[str, Any]:
    """The commands.v1 record that deletes ``memory`` of ``tenant``: ids only, no content."""
    return {
        "tenant": tenant, "memory_id": memory["memory_id"], "event_id": str(uuid.uuid4()),
        "action": "DELETE", "event_time": int(time.time() * 1000),
        "requested_by": requested_by,
        "source_event_ids": list(memory.get("source_event_ids") or []),
    }


class CommandWriter:
    """Produces commands (idempotent, acks=all) and answers with their consistency token."""

    def __init__(self, settings: Settings, requested_by: str = "read-service") -> None:
        self.settings = settings
        self.requested_by = requested_by
        self._codec = AvroCodec(registry_client(settings))
        self._spec = topic_spec(COMMANDS)
        self._topic = settings.topic(COMMANDS)
        self._producer = Producer({
            **settings.kafka_client_config(), "enable.idempotence": True, "acks": "all",
            "linger.ms": 0, "log_level": 3,
        })
        self._partitions: int | None = None

    def delete(self, tenant: str, memory: dict[str, Any]) -> str:
        """Ask for ``memory`` to be deleted; return the command's consistency token."""
        record = delete_command(tenant, memory, self.requested_by)
        value = self._codec.encode(subject_for(self.settings, self._spec),
                                   latest_schema(self._spec.schema), record)
        result: dict[str, Any] = {}

        def delivered(err: Any, msg: Any) -> None:
            result["err"], result["msg"] = err, msg

        self._producer.produce(
            self._topic, key=memory_key(tenant, memory["memory_id"]).encode(), value=value,
            partition=partition_for_tenant(tenant, self._partition_count()),
            on_delivery=delivered,
        )
        self._producer.flush(self.settings.request_timeout_s)
        if "msg" not in result:
            raise UnavailableError(f"{self._topic}: no delivery report for the delete command")
        if result["err"] is not None:
            raise DeliveryError(f"{self._topic}: delete command not delivered: "
                                f"{result['err'].str()}")
        msg = result["msg"]
        logger.info("delete of memory %s (tenant %s) written to %s[%d]@%d", memory["memory_id"],
                    tenant, msg.topic(), msg.partition(), msg.offset())
        return f"{msg.topic()}:{msg.partition()}:{msg.offset()}"

    def _partition_count(self) -> int:
        if self._partitions is None:
            meta = self._producer.list_topics(self._topic,
                                              timeout=self.settings.request_timeout_s)
            found = meta.topics.get(self._topic)
            if found is None or found.error is not None or not found.partitions:
                raise UnavailableError(f"topic {self._topic} is missing "
                                       "(run `memstream topics create`)")
            self._partitions = len(found.partitions)
        return self._partitions

    def close(self) -> None:
        """Deliver anything pending."""
        self._producer.flush(self.settings.request_timeout_s)


def migrate_deletions(settings: Settings) -> list[str]:
    """Write a DELETE command for every memory deleted on memories.v1 that commands.v1 does
    not name yet (deletes made before commands.v1 existed wrote memories.v1 directly): a
    replay re-applies only commands. Returns the keys it wrote commands for."""
    from streams.common.reader import read_topic

    deleted: dict[str, dict[str, Any]] = {}
    for record in read_topic(settings, "memories.v1"):
        if record.key is None or record.value is None:
            continue
        if record.value["deleted"]:
            deleted[record.key] = record.value
        else:
            deleted.pop(record.key, None)
    commanded = {r.key for r in read_topic(settings, COMMANDS)}
    todo = sorted(set(deleted) - commanded)
    if todo:
        writer = CommandWriter(settings, requested_by="migration")
        try:
            for key in todo:
                memory = deleted[key]
                writer.delete(memory["tenant"], memory)
        finally:
            writer.close()
    return todo
