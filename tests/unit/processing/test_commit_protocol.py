"""The commit protocol (streams/processing/transaction.py), branch by branch, on fake clients.

Branches:

- commit: begin → produce (outputs, changelog) → flush → send_offsets_to_transaction (the
  batch's next offsets, the group metadata) → commit; only then do the stores apply their
  writes, with the changelog offset they reach as checkpoint; commit counted;
- abort at each step — the agent raises, flush raises, the broker refuses a changelog record
  (delivery error), send_offsets_to_transaction raises, commit_transaction raises:
  abort_transaction, pending and sent store writes discarded, the consumer seeks back to the
  batch's first offset of each partition, the agents' rebuild hook runs, the error
  propagates, abort counted;
- after an abort, the purged records' delivery reports do not fail the next batch;
- Kafka error kinds (fenced/fatal, abortable, retriable) are not told apart: each aborts
  and propagates unchanged (crash-only: the worker exits and its restart is exactly-once);
- abort_transaction itself fails (fenced): that error propagates; no seek, no rebuild;
- a dead letter's own transaction (``run_single``) commits the record's next offset, and
  aborts back to the record;
- a full producer queue (BufferError) is waited out, not an error.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kafka_fakes import kafka_error, message
from runtime_rigs import TransactionRig, count

TransactionFactory = Callable[..., TransactionRig]
BATCH = [message("t.in", 0, 10), message("t.in", 1, 4), message("t.in", 0, 11),
         message("t.in", 1, 5)]


def _work(rig: TransactionRig, fail: BaseException | None = None) -> Callable[[], None]:
    """What agents do in a batch: a write to each partition's store and one output."""

    def process() -> None:
        rig.store(0).put("a", {"n": 1})
        rig.store(1).put("b", {"n": 2})
        rig.transactions.produce("t.out", 0, b"acme", b"output")
        if fail is not None:
            raise fail

    return process


def test_a_batch_commits_in_order_and_only_then_the_stores_apply(
    transaction_factory: TransactionFactory,
) -> None:
    rig = transaction_factory()
    seen_at_commit: list[dict[str, object]] = []
    rig.producer.before_commit = lambda: seen_at_commit.append(rig.committed(0))

    rig.transactions.run_batch(BATCH, _work(rig))

    assert rig.producer.calls == [
        "begin_transaction",
        "produce t.out[0]",
        "produce app-seen-changelog[0]",
        "produce app-seen-changelog[1]",
        "flush",
        "send_offsets_to_transaction",
        "commit_transaction",
    ]
    assert rig.producer.offsets_sent == [[("t.in", 0, 12), ("t.in", 1, 6)]]
    assert seen_at_commit == [{}], "a store applied its writes before the commit"
    assert rig.committed(0) == {"a": {"n": 1}} and rig.committed(1) == {"b": {"n": 2}}
    # The checkpoint is the next changelog offset: the restore after a crash starts there.
    assert rig.store(0).checkpoint == 1 and rig.store(1).checkpoint == 1
    assert rig.consumer.seeks == [] and rig.resets == []
    assert count(rig.metrics, "transactions", outcome="commit") == 1
    assert count(rig.metrics, "transactions", outcome="abort") == 0


def test_the_checkpoint_follows_the_last_changelog_offset_of_the_store(
    transaction_factory: TransactionFactory,
) -> None:
    rig = transaction_factory()
    for i in range(3):

        def put(i: int = i) -> None:
            rig.store(0).put(f"k{i}", i)

        rig.transactions.run_batch([message("t.in", 0, i)], put)
    assert rig.store(0).checkpoint == 3
    assert rig.store(1).checkpoint == 0, "a store with no change moved its checkpoint"
    assert rig.committed(0) == {"k0": 0, "k1": 1, "k2": 2}


ABORT_STEPS = {
    "agent raises": ("process", lambda: ValueError("agent bug")),
    "flush raises": ("flush", lambda: kafka_error("retriable")),
    "send_offsets raises": ("send_offsets_to_transaction", lambda: kafka_error("abortable")),
    "commit raises": ("commit_transaction", lambda: kafka_error("abortable")),
}


@pytest.mark.parametrize("step", list(ABORT_STEPS))
def test_a_failure_at_any_step_aborts_discards_rewinds_and_rebuilds(
    transaction_factory: TransactionFactory, step: str
) -> None:
    call, make_error = ABORT_STEPS[step]
    error = make_error()
    rig = transaction_factory(fail={} if call == "process" else {call: error})

    with pytest.raises(type(error)) as raised:
        rig.transactions.run_batch(BATCH, _work(rig, error if call == "process" else None))

    assert raised.value is error, "the error was replaced on its way out"
    calls = rig.producer.calls
    assert call == "process" or calls.index(call) < calls.index("abort_transaction")
    assert "commit_transaction" not in calls[calls.index("abort_transaction"):]
    assert calls[-2:] == ["abort_transaction", "poll(0)"]
    assert rig.committed(0) == {} and rig.committed(1) == {}
    assert rig.store(0).get("a") is None and rig.store(1).get("b") is None, "writes kept"
    assert rig.store(0).checkpoint == 0
    assert rig.consumer.seeks == [("t.in", 0, 10), ("t.in", 1, 4)]
    assert rig.resets == ["reset"]
    assert count(rig.metrics, "transactions", outcome="abort") == 1
    assert count(rig.metrics, "transactions", outcome="commit") == 0


def test_a_changelog_record_the_broker_refuses_aborts_the_batch(
    transaction_factory: TransactionFactory,
) -> None:
    rig = transaction_factory(refuse_topic="app-seen-changelog")
    with pytest.raises(Exception, match=r"app-seen-changelog\[0\].*refused"):
        rig.transactions.run_batch(BATCH, _work(rig))
    calls = rig.producer.calls
    assert "send_offsets_to_transaction" not in calls and "commit_transaction" not in calls
    assert calls[-2:] == ["abort_transaction", "poll(0)"]
    assert rig.committed(0) == {} and rig.resets == ["reset"]
    assert rig.consumer.seeks == [("t.in", 0, 10), ("t.in", 1, 4)]


def test_the_purged_reports_of_an_aborted_batch_do_not_fail_the_next(
    transaction_factory: TransactionFactory,
) -> None:
    # Nothing was delivered when flush failed: every record of the batch is purged.
    rig = transaction_factory(fail={"flush": kafka_error("retriable")})
    with pytest.raises(Exception, match="timed out"):
        rig.transactions.run_batch(BATCH, _work(rig))

    rig.transactions.run_batch(BATCH, _work(rig))

    assert rig.committed(0) == {"a": {"n": 1}}
    # The aborted batch's changelog records took offsets 0 and 1 of each changelog
    # partition; the checkpoint comes from the committed batch's records only.
    assert rig.store(0).checkpoint == 2 and rig.store(1).checkpoint == 2
    assert count(rig.metrics, "transactions", outcome="commit") == 1


@pytest.mark.parametrize("kind", ["fenced", "abortable", "retriable"])
def test_kafka_errors_of_every_kind_abort_and_propagate_unchanged(
    transaction_factory: TransactionFactory, kind: str
) -> None:
    error = kafka_error(kind)
    rig = transaction_factory(fail={"commit_transaction": error})
    with pytest.raises(type(error)) as raised:
        rig.transactions.run_batch(BATCH, _work(rig))
    assert raised.value is error
    assert rig.producer.calls[-2:] == ["abort_transaction", "poll(0)"]
    assert rig.committed(0) == {} and rig.store(0).checkpoint == 0


def test_a_fenced_producer_whose_abort_fails_too_stops_there(
    transaction_factory: TransactionFactory,
) -> None:
    fenced = kafka_error("fenced")
    rig = transaction_factory(fail={"commit_transaction": kafka_error("fenced"),
                                    "abort_transaction": fenced})
    with pytest.raises(type(fenced)) as raised:
        rig.transactions.run_batch(BATCH, _work(rig))
    assert raised.value is fenced, "the abort's error is what ends the worker"
    assert rig.producer.calls[-1] == "abort_transaction"
    assert rig.committed(0) == {} and rig.store(0).get("a") is None
    assert rig.consumer.seeks == [] and rig.resets == []


def test_a_dead_letter_commits_in_its_own_transaction_with_its_offset(
    transaction_factory: TransactionFactory,
) -> None:
    rig = transaction_factory()
    poison = message("t.in", 1, 7)
    rig.transactions.run_single(
        poison, lambda: rig.transactions.produce("t.deadletter.v1", 1, b"t.in", b"letter")
    )
    assert rig.producer.calls == ["begin_transaction", "produce t.deadletter.v1[1]", "flush",
                                  "send_offsets_to_transaction", "commit_transaction"]
    assert rig.producer.offsets_sent == [[("t.in", 1, 8)]]
    assert [r.value for r in rig.producer.committed_to("t.deadletter.v1")] == [b"letter"]


def test_a_dead_letter_that_cannot_commit_is_aborted_back_to_its_record(
    transaction_factory: TransactionFactory,
) -> None:
    rig = transaction_factory(fail={"commit_transaction": kafka_error("abortable")})
    with pytest.raises(Exception, match="generation"):
        rig.transactions.run_single(
            message("t.in", 1, 7),
            lambda: rig.transactions.produce("t.deadletter.v1", 1, b"t.in", b"letter"),
        )
    assert rig.consumer.seeks == [("t.in", 1, 7)] and rig.resets == ["reset"]
    assert rig.producer.committed == []


def test_a_full_producer_queue_is_waited_out(transaction_factory: TransactionFactory) -> None:
    rig = transaction_factory(buffer_full=2)
    rig.transactions.run_batch([message("t.in", 0, 0)], _work(rig))
    assert rig.producer.calls[:6] == [
        "begin_transaction", "produce: BufferError", "poll(0.1)", "produce: BufferError",
        "poll(0.1)", "produce t.out[0]",
    ]
    assert [r.value for r in rig.producer.committed_to("t.out")] == [b"output"]
