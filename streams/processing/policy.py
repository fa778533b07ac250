"""The processing error policy (Kafka Streams' KIP-1033 processing handler), decided once here.

A batch whose agent code raises is never the partition's end:

- a non-retriable ``MemstreamError`` is the data's fault: the batch is bisected at once;
- any other exception is retried once (it may be transient), then, under
  ``on_processing_error=deadletter``, bisected; under ``fail`` it stops the worker
  (``AgentFailedError``);
- bisecting commits the halves that succeed and dead-letters each single record that still
  fails, each in its own transaction with its offset;
- broker errors (``KafkaException``) and retriable ``MemstreamError``s are raised: they are
  never a record's fault.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import KafkaException, Message, TopicPartition

from streams.common.exceptions import MemstreamError
from streams.processing.deadletter import DeadLetterReason, SourceCoordinates
from streams.processing.exceptions import AgentFailedError
from streams.processing.outputs import Outputs
from streams.processing.transaction import Slot, Transactions, offset, slot

logger = logging.getLogger(__name__)


class ErrorPolicy:
    """Runs batches through ``process`` and handles what agent code raises on them."""

    def __init__(
        self,
        process: Callable[[list[Message]], None],
        transactions: Transactions,
        outputs: Outputs,
        *,
        on_processing_error: str,
        failed_agent: Callable[[], str | None],
        first_agent: Callable[[str], str],
    ) -> None:
        self._process = process
        self.transactions = transactions
        self.outputs = outputs
        self.on_processing_error = on_processing_error
        self._failed_agent = failed_agent  # the agent that raised in the last attempt
        self._first_agent = first_agent  # the first agent of a (full) topic

    def handle(self, msgs: list[Message]) -> None:
        """Process a batch; if agent code raises on it, keep the partition flowing."""
        error = self._attempt(msgs)
        if error is None:
            return
        done: dict[Slot, int] = {}
        try:
            if not is_data_error(error):
                logger.error("%s raised on a batch of %d records, retrying it once: %r",
                             self._failed_agent(), len(msgs), error)
                error = self._attempt(msgs)
                if error is None:
                    _mark_done(done, msgs)
                    return
                self._check(error)
            logger.warning("isolating the record(s) of a batch of %d that %s fails on: %r",
                           len(msgs), self._failed_agent(), error)
            self._bisect(msgs, done)
        finally:
            # Aborts rewound the batch's partitions: go past what was committed since.
            first: dict[Slot, int] = {}
            for msg in msgs:
                first.setdefault(slot(msg), offset(msg))
            for (topic, partition), at in first.items():
                position = done.get((topic, partition), at)
                self.transactions.consumer.seek(TopicPartition(topic, partition, position))

    def _attempt(self, msgs: list[Message]) -> Exception | None:
        """Process ``msgs`` in one transaction; return what agent code raised (the
        transaction was aborted and its partitions rewound), raise infrastructure errors."""
        try:
            self._process(msgs)
        except KafkaException:
            raise
        except MemstreamError as exc:
            if exc.retriable:
                raise
            return exc
        except Exception as exc:  # noqa: BLE001 - agent code's failure, handled by the policy
            return exc
        return None

    def _check(self, error: Exception) -> None:
        if not is_data_error(error) and self.on_processing_error == "fail":
            raise AgentFailedError(
                f"agent {self._failed_agent()} raised {type(error).__name__}: {error} "
                "(MEMSTREAM_ON_PROCESSING_ERROR=fail: stopping, nothing committed)"
            ) from error

    def _bisect(self, msgs: list[Message], done: dict[Slot, int]) -> None:
        """Commit the halves that succeed; dead-letter each single record that fails.
        ``done`` gets the next offset of each partition as far as committed."""
        todo = [msgs]
        while todo:
            part = todo.pop()
            error = self._attempt(part)
            if error is not None and len(part) > 1:
                half = len(part) // 2
                todo += [part[half:], part[:half]]  # left half first: log order
                continue
            if error is not None:
                self._check(error)
                self._dead_letter_failed(part[0], error)
            _mark_done(done, part)

    def _dead_letter_failed(self, msg: Message, exc: Exception) -> None:
        (topic, partition), at = slot(msg), offset(msg)
        agent = self._failed_agent() or self._first_agent(topic)
        logger.error("dead-lettering %s[%d]@%d: %s failed on it: %r",
                     topic, partition, at, agent, exc)
        reason = (DeadLetterReason.INVALID_DATA if is_data_error(exc)
                  else DeadLetterReason.PROCESSING_FAILED)
        source = SourceCoordinates(topic, partition, at, msg.key(), msg.value())
        self.transactions.run_single(
            msg, lambda: self.outputs.dead_letter_at(source, reason, _summary(agent, exc),
                                                     agent, None)
        )


def is_data_error(error: Exception) -> bool:
    """A non-retriable MemstreamError: an agent refused the record's data."""
    return isinstance(error, MemstreamError) and not error.retriable


def _mark_done(done: dict[Slot, int], msgs: list[Message]) -> None:
    for msg in msgs:
        done[slot(msg)] = offset(msg) + 1


def _summary(agent: str, exc: BaseException) -> str:
    """``agent``, the exception and where it was raised, for a dead letter (bounded)."""
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        frame = frames[-1]
        where = f" (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"
    return f"agent {agent} raised {type(exc).__name__}: {str(exc)[:800]}{where}"
