"""Where a Kafka message sits, typed.

confluent-kafka types a message's topic, partition and offset as optional: an error event
about no partition (all brokers down) has none. A record, a delivery report without error
and an end-of-partition event have all three; ``coordinates`` says so once.
"""

from __future__ import annotations

from confluent_kafka import Message

from streams.common.exceptions import UnavailableError


def coordinates(msg: Message) -> tuple[str, int, int]:
    """The topic, partition and offset of a record or of a partition's event; raises
    UnavailableError, with the client's error, for an event about no partition."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        err = msg.error()
        raise UnavailableError(
            "a Kafka client event about no partition: "
            f"{err.str() if err is not None else 'without an error'}"
        )
    return topic, partition, offset
