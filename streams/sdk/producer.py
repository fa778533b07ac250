"""The producer SDK: typed events in, Avro through the registry, delivery results out.

Idempotent, ``acks=all``, compressed. Every event is validated against its topic's
latest schema, and by ``check_event`` against what the agents refuse, before anything is
sent; a bad one raises ``ValidationError`` naming the field and the limit. A broker or
registry that does not answer gives an error after ``request_timeout_s``, never a hang.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.common.codec import AvroCodec
from streams.common.exceptions import DeliveryError, UnavailableError, ValidationError
from streams.common.messages import coordinates
from streams.common.partitioning import partition_for_tenant
from streams.common.registry import latest_schema, registry_client, subject_for
from streams.common.settings import Settings, load_settings
from streams.common.topics import LARGEST_MESSAGE_BYTES, TopicSpec, topic_spec, voice_audio_limit
from streams.common.validation import check_event, validate_record
from streams.sdk.events import VoiceNote, as_record

logger = logging.getLogger(__name__)

_CODECS_BY_SUFFIX = {".wav": "wav", ".flac": "flac", ".ogg": "ogg", ".opus": "ogg", ".mp3": "mp3"}


@dataclass(frozen=True)
class DeliveryResult:
    """Where the broker stored an event."""

    topic: str
    partition: int
    offset: int
    event_id: str

    @property
    def consistency_token(self) -> str:
        """``topic:partition:offset`` — what a reader waits for to see this write."""
        return f"{self.topic}:{self.partition}:{self.offset}"


class MemstreamProducer:
    """Synchronous producer for application code; ``send_async`` for throughput."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self._codec = AvroCodec(
            registry_client(self.settings), auto_register=self.settings.auto_register_schemas
        )
        timeout_ms = int(self.settings.request_timeout_s * 1000)
        conf = {
            **self.settings.kafka_client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": self.settings.compression,
            "linger.ms": self.settings.linger_ms,
            "message.max.bytes": LARGEST_MESSAGE_BYTES,
            # Bounded: a broker that never answers fails the event after this long.
            "delivery.timeout.ms": timeout_ms,
            "socket.connection.setup.timeout.ms": min(timeout_ms, 10_000),
            "log_level": 3,
        }
        self._producer = Producer(conf)
        self._schemas: dict[str, dict[str, Any]] = {}
        self._partition_counts: dict[str, int] = {}
        self._pending = 0
        self._lock = threading.Lock()
        self._failures: list[DeliveryError] = []
        self._closed = False

    # -- sending ----------------------------------------------------------------------
    def send(self, event: Any, *, topic: str | None = None) -> DeliveryResult:
        """Send one event and wait until the broker has it (or raise DeliveryError)."""
        future = self.send_async(event, topic=topic)
        deadline = self.settings.request_timeout_s + 5.0
        waited = 0.0
        while not future.done() and waited < deadline:
            self._producer.poll(0.1)
            waited += 0.1
        if not future.done():
            raise UnavailableError(
                f"no delivery report within {deadline:.0f}s from {self.settings.bootstrap_servers}"
            )
        return future.result()

    def send_async(self, event: Any, *, topic: str | None = None) -> Future[DeliveryResult]:
        """Validate, encode and enqueue one event; the future resolves on delivery."""
        if self._closed:
            raise RuntimeError("producer is closed")
        spec = self._spec(event, topic)
        full_topic = self.settings.topic(spec.base)
        record = self._validated(spec, as_record(event))
        value = self._codec.encode(subject_for(self.settings, spec), self._schema(spec), record)
        if len(value) > spec.max_message_bytes:
            raise ValidationError(
                f"{spec.base}: encoded event is {len(value)} bytes, over the topic limit of "
                f"{spec.max_message_bytes} bytes",
                field="<record>",
                limit=spec.max_message_bytes,
            )
        key = str(record[spec.key_field]).encode()
        partition = partition_for_tenant(str(record["tenant"]), self._partitions(full_topic))
        future: Future[DeliveryResult] = Future()
        event_id = str(record["event_id"])

        def delivered(err: KafkaError | None, msg: Message) -> None:
            with self._lock:
                self._pending -= 1
            if err is not None:
                failure = DeliveryError(
                    f"{full_topic}: event {event_id} not delivered: {err.str()}"
                )
                self._failures.append(failure)
                future.set_exception(failure)
            else:
                future.set_result(DeliveryResult(*coordinates(msg), event_id))

        with self._lock:
            self._pending += 1
        try:
            self._produce(full_topic, partition, key, value, delivered)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        return future

    def voice_note(
        self,
        audio: bytes | str | Path,
        *,
        tenant: str,
        session_id: str,
        codec: str | None = None,
        **fields: Any,
    ) -> DeliveryResult:
        """Send a voice note from a file path or bytes; the codec follows the file suffix."""
        if isinstance(audio, str | Path):
            path = Path(audio)
            codec = codec or _CODECS_BY_SUFFIX.get(path.suffix.lower())
            limit = voice_audio_limit()
            size = path.stat().st_size
            if size > limit:
                raise ValidationError(
                    f"voice.v1: field 'audio' is {size} bytes ({path.name}), over the limit "
                    f"of {limit} bytes",
                    field="audio",
                    limit=limit,
                )
            audio = path.read_bytes()
        if not codec:
            raise ValidationError(
                "voice.v1: field 'codec' is required (wav, flac, ogg, mp3)", field="codec"
            )
        note = VoiceNote(tenant=tenant, session_id=session_id, codec=codec, audio=audio, **fields)
        return self.send(note)

    # -- completion ---------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> None:
        """Deliver every pending event, or raise DeliveryError listing those that failed."""
        timeout = self.settings.request_timeout_s + 5.0 if timeout is None else timeout
        remaining = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if remaining:
            raise UnavailableError(
                f"{remaining} event(s) still undelivered after {timeout:.0f}s: is the broker at "
                f"{self.settings.bootstrap_servers} reachable?"
            )
        if failures:
            detail = "; ".join(str(f) for f in failures[:5])
            raise DeliveryError(f"{len(failures)} event(s) failed: {detail}")

    def close(self) -> None:
        """Flush, then release the producer; pending failures are raised, not dropped."""
        if self._closed:
            return
        self._closed = True
        self.flush()

    def __enter__(self) -> MemstreamProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            # Do not mask the caller's error; still try to deliver what was queued.
            self._closed = True
            try:
                self.flush()
            except Exception:
                logger.exception("events pending at close were not all delivered")

    # -- internals ------------------------------------------------------------------------
    def _partitions(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            try:
                meta = self._producer.list_topics(topic, timeout=self.settings.request_timeout_s)
            except KafkaException as exc:
                raise UnavailableError(
                    f"broker {self.settings.bootstrap_servers} unreachable: {exc}"
                ) from exc
            found = meta.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                raise DeliveryError(
                    f"topic {topic} does not exist (run `memstream topics create`)"
                )
            count = self._partition_counts[topic] = len(found.partitions)
        return count

    def _produce(
        self, topic: str, partition: int, key: bytes, value: bytes, callback: Any
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, partition=partition, on_delivery=callback
                )
                break
            except BufferError:
                # Local queue full: serve delivery reports to make room, then retry.
                self._producer.poll(0.5)
            except KafkaException as exc:
                raise DeliveryError(f"{topic}: cannot enqueue: {exc}") from exc
        self._producer.poll(0)

    def _spec(self, event: Any, topic: str | None) -> TopicSpec:
        name = topic or getattr(event, "TOPIC", None)
        if name is None:
            raise TypeError(
                f"{type(event).__name__} does not say its topic: pass topic='telemetry.v1' "
                "or send a memstream event dataclass"
            )
        return topic_spec(name, self.settings.topic_prefix)

    def _schema(self, spec: TopicSpec) -> dict[str, Any]:
        schema = self._schemas.get(spec.schema)
        if schema is None:
            schema = self._schemas[spec.schema] = latest_schema(spec.schema)
        return schema

    def _validated(self, spec: TopicSpec, record: Mapping[str, Any]) -> dict[str, Any]:
        return validated(self.settings, spec, self._schema(spec), record)


def validated(
    settings: Settings, spec: TopicSpec, schema: Mapping[str, Any], record: Mapping[str, Any]
) -> dict[str, Any]:
    """``record`` checked as the SDK checks it before sending (schema, limits, and what the
    agents refuse), with defaults filled; else ValidationError naming the field."""
    limits = {
        "text": settings.max_text_chars,
        "comment": settings.max_text_chars,
        "audio": voice_audio_limit(),
    }
    checked = validate_record(schema, record, where=spec.base, limits=limits)
    # What an agent would refuse is refused here, by the same function.
    check_event(
        spec.base, checked, max_text_chars=settings.max_text_chars,
        now_ms=int(time.time() * 1000),
        max_ahead_ms=int(settings.max_event_time_ahead_s * 1000),
    )
    return checked
