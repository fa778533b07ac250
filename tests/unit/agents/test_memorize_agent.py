"""The memorize agent without a broker, on the real bundled embedding model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from batch_ctx import BatchCtxFactory, RecordingBatchContext, decoded, scored

from agents.dedupe import content_hash, memory_id
from agents.memorize import MemorizeAgent
from streams.common.exceptions import CorruptStateError
from streams.common.keys import SEP
from streams.models.embedder import SentenceTransformerEmbedder, vector_from_bytes, vector_to_bytes
from streams.processing.api import InputRecord
from streams.processing.deadletter import DeadLetterReason

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RESTART = "Restart the ingest worker after changing the topic prefix."
RESTART_NOISY = "  restart THE ingest   worker after\nchanging the topic prefix "
PASSWORD = "How do I reset my password?"
PASSWORD_PARAPHRASE = "How can I reset my password?"  # cosine ~0.99 with PASSWORD
WEATHER = "The weather in Lisbon is sunny and warm today."  # unrelated to both
ALL = frozenset({0})

MemorizeFactory = Callable[..., MemorizeAgent]


@pytest.fixture
def ctx(batch_ctx_factory: BatchCtxFactory) -> RecordingBatchContext:
    return batch_ctx_factory("content", "memories")


@pytest.fixture
def agent(memorize_agent_factory: MemorizeFactory) -> MemorizeAgent:
    return memorize_agent_factory()


def texts_embedded(agent: MemorizeAgent) -> float:
    """How many texts the agent has sent to the model (sum of its batch-size histogram)."""
    value = agent.metrics.registry.get_sample_value("memstream_embed_batch_size_sum")
    return 0.0 if value is None else value


def duplicates(agent: MemorizeAgent, match: str) -> float:
    value = agent.metrics.registry.get_sample_value("memstream_duplicates_total", {"match": match})
    return 0.0 if value is None else value


def stored_memory(ctx: RecordingBatchContext, mid: str, tenant: str = "acme") -> Any:
    return ctx.store("memories", 0).get(f"{tenant}{SEP}{mid}")


def content_entry(ctx: RecordingBatchContext, text: str, tenant: str = "acme") -> Any:
    return ctx.store("content", 0).get(f"{tenant}{SEP}{content_hash(text)}")


def test_new_content_becomes_a_memory(agent: MemorizeAgent, ctx: RecordingBatchContext) -> None:
    agent.process([scored(RESTART, event_id="e-1", value=0.5, confidence=0.65)], ctx)
    ctx.commit()

    (memory,) = ctx.sent_to("memories.v1")
    mid = memory_id("acme", RESTART)
    assert ctx.sent[0].key == f"acme:{mid}"
    embedding = memory.pop("embedding")
    assert memory == {
        "tenant": "acme",
        "memory_id": mid,
        "event_id": "e-1",
        "event_time": 1_700_000_000_000,
        "session_id": "s-1",
        "kind": "RESPONSE",
        "text": RESTART,
        "content_hash": content_hash(RESTART),
        "model_id": MODEL,
        "dimension": 384,
        "value": 0.5,
        "confidence": 0.65,
        "occurrence_count": 1,
        "source_event_ids": ["e-1"],
        "merges": [],
        "deleted": False,
        "scorer_version": "value-scorer/1",
        "valid_from": 1_700_000_000_000,
        "supersedes": None,
        "superseded_by": None,
        "superseded_at": None,
    }
    vector = vector_from_bytes(embedding, 384)
    assert float(vector @ vector) == pytest.approx(1.0, abs=1e-5)
    assert content_entry(ctx, RESTART) == {"memory_id": mid, "similarity": 0.0}
    assert stored_memory(ctx, mid)["embedding"] == embedding
    assert texts_embedded(agent) == 1


@pytest.mark.parametrize("same_batch", [True, False], ids=["same-batch", "after-commit"])
def test_exact_duplicate_merges_without_embedding_again(
    agent: MemorizeAgent, ctx: RecordingBatchContext, same_batch: bool
) -> None:
    first = scored(RESTART, event_id="e-1", offset=0)
    second = scored(RESTART_NOISY, event_id="e-2", offset=1, value=0.7, confidence=0.6)
    assert first.value["content_hash"] == second.value["content_hash"]
    if same_batch:
        agent.process([first, second], ctx)
    else:
        agent.process([first], ctx)
        ctx.commit()
        agent.process([second], ctx)
    ctx.commit()

    memory = ctx.sent_to("memories.v1")[-1]
    assert memory["memory_id"] == memory_id("acme", RESTART)
    assert memory["text"] == RESTART  # the first wording is kept
    assert memory["occurrence_count"] == 2
    assert memory["source_event_ids"] == ["e-1", "e-2"]
    assert memory["merges"] == [{"event_id": "e-2", "similarity": 1.0, "match": "exact"}]
    assert (memory["event_id"], memory["value"], memory["confidence"]) == ("e-2", 0.7, 0.6)
    assert texts_embedded(agent) == 1
    assert duplicates(agent, "exact") == 1
    assert stored_memory(ctx, memory["memory_id"])["occurrence_count"] == 2


def test_near_duplicate_merges_with_its_similarity(
    agent: MemorizeAgent, ctx: RecordingBatchContext, embedder: SentenceTransformerEmbedder
) -> None:
    a, b = embedder.embed([PASSWORD, PASSWORD_PARAPHRASE])
    expected = float(a @ b)
    assert 0.9 <= expected < 1.0

    agent.process([scored(PASSWORD, event_id="e-1")], ctx)
    ctx.commit()
    agent.process([scored(PASSWORD_PARAPHRASE, event_id="e-2", offset=1)], ctx)
    ctx.commit()

    memory = ctx.sent_to("memories.v1")[-1]
    mid = memory_id("acme", PASSWORD)
    assert memory["memory_id"] == mid
    assert memory["occurrence_count"] == 2
    assert memory["source_event_ids"] == ["e-1", "e-2"]
    ((merge),) = memory["merges"]
    assert (merge["event_id"], merge["match"]) == ("e-2", "near")
    assert 0.9 <= merge["similarity"] < 1.0
    assert merge["similarity"] == pytest.approx(expected, abs=1e-4)
    assert content_entry(ctx, PASSWORD_PARAPHRASE)["memory_id"] == mid
    assert texts_embedded(agent) == 2
    assert duplicates(agent, "near") == 1
    assert duplicates(agent, "exact") == 0


@pytest.mark.parametrize("margin", [-1e-3, 1e-3], ids=["just-below-similarity", "just-above"])
def test_threshold_decides_near_merge(
    memorize_agent_factory: MemorizeFactory,
    ctx: RecordingBatchContext,
    embedder: SentenceTransformerEmbedder,
    margin: float,
) -> None:
    a, b = embedder.embed([PASSWORD, PASSWORD_PARAPHRASE])
    agent = memorize_agent_factory(threshold=float(a @ b) + margin)
    agent.process([scored(PASSWORD, event_id="e-1"), scored(PASSWORD_PARAPHRASE, event_id="e-2")],
                  ctx)
    ids = {r["memory_id"] for r in ctx.sent_to("memories.v1")}
    assert len(ids) == (1 if margin < 0 else 2)


def test_unrelated_content_is_a_new_memory(
    agent: MemorizeAgent, ctx: RecordingBatchContext
) -> None:
    agent.process([scored(RESTART, event_id="e-1"), scored(WEATHER, event_id="e-2", offset=1)], ctx)
    ctx.commit()

    first, second = ctx.sent_to("memories.v1")
    assert first["memory_id"] == memory_id("acme", RESTART)
    assert second["memory_id"] == memory_id("acme", WEATHER)
    assert (second["occurrence_count"], second["merges"]) == (1, [])
    seen = content_entry(ctx, WEATHER)
    assert seen["memory_id"] == second["memory_id"]
    # The nearest memory it was compared with is recorded, far below the threshold.
    assert -1.0 <= seen["similarity"] < 0.5
    assert len(agent.indexes) == 2


def test_two_tenants_never_merge(agent: MemorizeAgent, ctx: RecordingBatchContext) -> None:
    agent.process(
        [
            scored(PASSWORD, event_id="e-1", tenant="acme"),
            scored(PASSWORD, event_id="e-2", tenant="globex", offset=1),
            scored(PASSWORD_PARAPHRASE, event_id="e-3", tenant="initech", offset=2),
        ],
        ctx,
    )
    ctx.commit()

    memories = ctx.sent_to("memories.v1")
    assert [(m["tenant"], m["memory_id"], m["occurrence_count"]) for m in memories] == [
        ("acme", memory_id("acme", PASSWORD), 1),
        ("globex", memory_id("globex", PASSWORD), 1),
        ("initech", memory_id("initech", PASSWORD_PARAPHRASE), 1),
    ]
    assert len({m["memory_id"] for m in memories}) == 3
    assert all(m["merges"] == [] for m in memories)
    assert texts_embedded(agent) == 3
    assert duplicates(agent, "exact") + duplicates(agent, "near") == 0


def test_memory_records_are_deterministic(
    memorize_agent_factory: MemorizeFactory, batch_ctx_factory: BatchCtxFactory
) -> None:
    def batch() -> list[Any]:
        return [
            scored(PASSWORD, event_id="e-1", offset=0),
            scored(RESTART, event_id="e-2", offset=1, value=0.4, confidence=0.5),
            scored(RESTART_NOISY, event_id="e-3", offset=2),
            scored(PASSWORD_PARAPHRASE, event_id="e-4", offset=3),
        ]

    runs = []
    for name in ("first", "second"):
        ctx = batch_ctx_factory("content", "memories", name=name)
        memorize_agent_factory().process(batch(), ctx)
        ctx.commit()
        runs.append(ctx)

    first, second = (ctx.sent for ctx in runs)
    assert len(first) == 4
    assert first == second
    assert [c.key for c in runs[0].changelog] == [c.key for c in runs[1].changelog]


def test_rescore_of_a_memorized_event_updates_value_not_count(
    agent: MemorizeAgent, ctx: RecordingBatchContext
) -> None:
    agent.process([scored(RESTART, event_id="e-1")], ctx)
    ctx.commit()
    agent.process([scored(RESTART, event_id="e-1", value=0.7, confidence=0.65, revision=1)], ctx)
    ctx.commit()

    memory = ctx.sent_to("memories.v1")[-1]
    assert (memory["value"], memory["confidence"]) == (0.7, 0.65)
    assert memory["occurrence_count"] == 1
    assert memory["source_event_ids"] == ["e-1"]
    assert memory["merges"] == []
    assert texts_embedded(agent) == 1
    assert duplicates(agent, "exact") == 0

    # A later unknown value never erases the known one.
    agent.process([scored(RESTART, event_id="e-1", value=None, revision=2)], ctx)
    ctx.commit()
    memory = ctx.sent_to("memories.v1")[-1]
    assert (memory["value"], memory["occurrence_count"]) == (0.7, 1)


def test_rebuild_rebuilds_the_index_from_committed_memories(
    memorize_agent_factory: MemorizeFactory, ctx: RecordingBatchContext
) -> None:
    memorize_agent_factory().process([scored(PASSWORD, event_id="e-1")], ctx)
    ctx.commit()

    restarted = memorize_agent_factory()
    assert len(restarted.indexes) == 0
    restarted.rebuild(ALL, ctx.committed())
    assert len(restarted.indexes) == 1

    restarted.process([scored(PASSWORD_PARAPHRASE, event_id="e-2", offset=1)], ctx)
    memory = ctx.sent_to("memories.v1")[-1]
    assert memory["memory_id"] == memory_id("acme", PASSWORD)
    assert memory["merges"][0]["match"] == "near"
    # Only the new text was embedded: the index came from the stored vectors.
    assert texts_embedded(restarted) == 1


def test_rebuild_ignores_partitions_not_owned(
    memorize_agent_factory: MemorizeFactory, batch_ctx_factory: BatchCtxFactory
) -> None:
    ctx = batch_ctx_factory("content", "memories", partitions=(0, 1))
    memorize_agent_factory().process([scored(PASSWORD, event_id="e-1", partition=1)], ctx)
    ctx.commit()
    restarted = memorize_agent_factory()
    restarted.rebuild(frozenset({0}), ctx.committed())
    assert len(restarted.indexes) == 0
    restarted.rebuild(frozenset({0, 1}), ctx.committed())
    assert len(restarted.indexes) == 1


def test_aborted_batch_leaves_no_trace_after_rebuild(
    agent: MemorizeAgent, ctx: RecordingBatchContext
) -> None:
    agent.process([scored(PASSWORD, event_id="e-1")], ctx)
    assert len(agent.indexes) == 1  # added during the batch, before the commit
    ctx.abort()
    agent.rebuild(ALL, ctx.committed())

    assert len(agent.indexes) == 0
    assert list(ctx.store("memories", 0).committed_items()) == []
    assert list(ctx.store("content", 0).committed_items()) == []
    assert ctx.sent == []

    # The paraphrase is new again: it must not merge into the aborted memory.
    agent.process([scored(PASSWORD_PARAPHRASE, event_id="e-2", offset=1)], ctx)
    ctx.commit()
    (memory,) = ctx.sent_to("memories.v1")
    assert memory["memory_id"] == memory_id("acme", PASSWORD_PARAPHRASE)
    assert (memory["occurrence_count"], memory["merges"]) == (1, [])


@pytest.mark.parametrize(
    ("model_id", "deleted"), [("other/model", False), (MODEL, True)], ids=["other-model", "deleted"]
)
def test_rebuild_skips_other_models_and_deleted_memories(
    agent: MemorizeAgent,
    ctx: RecordingBatchContext,
    embedder: SentenceTransformerEmbedder,
    model_id: str,
    deleted: bool,
) -> None:
    (vector,) = embedder.embed([PASSWORD])
    mid = memory_id("acme", PASSWORD)
    ctx.store("memories", 0).put(
        f"acme{SEP}{mid}",
        {
            "tenant": "acme",
            "memory_id": mid,
            "event_id": "e-1",
            "event_time": 1_700_000_000_000,
            "session_id": "s-1",
            "kind": "QUERY",
            "text": PASSWORD,
            "content_hash": content_hash(PASSWORD),
            "embedding": vector_to_bytes(vector),
            "model_id": model_id,
            "dimension": 384,
            "value": None,
            "confidence": 0.0,
            "occurrence_count": 1,
            "source_event_ids": ["e-1"],
            "merges": [],
            "deleted": deleted,
            "scorer_version": None,
        },
    )
    ctx.commit()
    agent.rebuild(ALL, ctx.committed())
    assert len(agent.indexes) == 0

    agent.process([scored(PASSWORD_PARAPHRASE, event_id="e-2")], ctx)
    (memory,) = ctx.sent_to("memories.v1")
    assert memory["memory_id"] == memory_id("acme", PASSWORD_PARAPHRASE)
    assert memory["occurrence_count"] == 1


def test_a_content_entry_naming_a_missing_memory_is_corrupt_state(
    agent: MemorizeAgent, ctx: RecordingBatchContext
) -> None:
    lost = "0f8e2a4c-0000-5000-8000-000000000000"
    ctx.store("content", 0).put(f"acme{SEP}{content_hash(RESTART)}",
                                {"memory_id": lost, "similarity": 0.0})
    ctx.commit()
    with pytest.raises(CorruptStateError, match=f"names memory {lost}, which the memories"):
        agent.process([scored(RESTART, event_id="e-1")], ctx)


def test_an_index_entry_the_store_lacks_is_corrupt_state(
    agent: MemorizeAgent, ctx: RecordingBatchContext, embedder: SentenceTransformerEmbedder
) -> None:
    (vector,) = embedder.embed([PASSWORD])
    agent.indexes.add("acme", "ghost", vector, MODEL)
    with pytest.raises(CorruptStateError, match="index of tenant acme holds memory ghost"):
        agent.process([scored(PASSWORD_PARAPHRASE, event_id="e-1")], ctx)


def test_empty_and_oversize_text_are_dead_lettered(
    memorize_agent_factory: MemorizeFactory, ctx: RecordingBatchContext
) -> None:
    agent = memorize_agent_factory(max_text_chars=30)
    agent.process(
        [
            scored(" \n ", event_id="e-1", offset=0),
            scored("y" * 31, event_id="e-2", offset=1),
            scored(PASSWORD, event_id="e-3", offset=2),
        ],
        ctx,
    )
    assert [(d.record.offset, d.reason, d.tenant) for d in ctx.dead_letters] == [
        (0, DeadLetterReason.EMPTY_TEXT, "acme"), (1, DeadLetterReason.OVERSIZE, "acme")
    ]
    assert [m["event_id"] for m in ctx.sent_to("memories.v1")] == ["e-3"]
    assert texts_embedded(agent) == 1


# -- deletes (the read service writes DELETE commands to commands.v1) -------------------------
def _delete(mid: str, event_ids: tuple[str, ...] = (), command_id: str = "cmd-1") -> InputRecord:
    return decoded("commands.v1", {
        "tenant": "acme", "memory_id": mid, "event_id": command_id, "action": "DELETE",
        "event_time": 1_700_000_100_000, "requested_by": "read-service",
        "source_event_ids": list(event_ids)})


def test_memorize_reads_commands_not_its_own_output(agent: MemorizeAgent) -> None:
    assert agent.inputs == ("scored.v1", "commands.v1")
    assert "memories.v1" not in agent.inputs


def test_a_deletion_sticks_when_its_content_comes_again(
    agent: MemorizeAgent, ctx: RecordingBatchContext
) -> None:
    agent.process([scored(PASSWORD, event_id="e-1", value=0.5, confidence=0.65)], ctx)
    ctx.commit()
    mid = memory_id("acme", PASSWORD)
    agent.process([_delete(mid, ("e-1",))], ctx)
    ctx.commit()
    gone = stored_memory(ctx, mid)
    assert gone["deleted"] and gone["text"] == "" and gone["embedding"] == b""
    assert gone["content_hash"] == "" and gone["value"] is None and gone["merges"] == []
    written = ctx.sent_to("memories.v1")[-1]
    assert written["deleted"] and written["text"] == "" and written["event_id"] == "cmd-1"
    assert ctx.sent[-1].key == f"acme:{mid}", "same key as the memory: compaction drops it"
    assert PASSWORD not in repr(written)
    agent.rebuild(ALL, ctx.committed())
    assert agent.indexes.nearest("acme", agent.embedder.embed([PASSWORD])[0], k=1) == []

    sent_before = len(ctx.sent_to("memories.v1"))
    agent.process([scored(PASSWORD, event_id="e-2", value=0.5, confidence=0.65),
                   scored(PASSWORD_PARAPHRASE, event_id="e-3", value=0.5, confidence=0.65)], ctx)
    ctx.commit()
    again = stored_memory(ctx, mid)
    assert again["deleted"] and again["occurrence_count"] == 2 and again["text"] == ""
    after = ctx.sent_to("memories.v1")[sent_before:]
    assert {m["memory_id"] for m in after if not m["deleted"]} == {
        memory_id("acme", PASSWORD_PARAPHRASE)}, "the deleted memory is not resurrected"

    before = len(ctx.sent)
    agent.process([_delete(mid, command_id="cmd-2")], ctx)  # deleted twice: nothing to do
    assert len(ctx.sent) == before


def test_a_delete_read_before_the_memory_is_replayed_still_holds(
    agent: MemorizeAgent, ctx: RecordingBatchContext
) -> None:
    """A replay re-reads commands.v1 from the start: the delete may come first."""
    agent.process([_delete(memory_id("acme", PASSWORD), ("e-1",))], ctx)
    agent.process([scored(PASSWORD, event_id="e-1", value=0.5, confidence=0.65)], ctx)
    ctx.commit()
    memory = stored_memory(ctx, memory_id("acme", PASSWORD))
    assert memory["deleted"] and memory["occurrence_count"] == 1
    assert memory["source_event_ids"] == ["e-1"] and memory["text"] == ""
    assert all(m["deleted"] for m in ctx.sent_to("memories.v1"))
    assert all(PASSWORD not in repr(m) for m in ctx.sent_to("memories.v1"))


def test_a_replay_that_reads_the_delete_first_writes_the_same_deleted_memory(
    memorize_agent_factory: MemorizeFactory, batch_ctx_factory: BatchCtxFactory
) -> None:
    """The near duplicate merged before the delete stays in it when a replay reads the
    delete first (it would otherwise become a memory of its own), and the deleted record
    is byte for byte the one the first run wrote."""
    secret = "The staging database password is hunter2-prod-7731."
    near = "Reminder: the staging database password is hunter2-prod-7731."  # cosine 0.98
    mid = memory_id("acme", secret)
    events = [scored(secret, event_id="e-1", value=0.5, confidence=0.65),
              scored(near, event_id="e-3", value=0.9, confidence=0.8),
              scored(secret, event_id="e-5")]
    later = [scored(secret, event_id="e-6", value=0.2, confidence=0.5)]

    first, ctx_a = memorize_agent_factory(), batch_ctx_factory("content", "memories")
    for record in events:
        first.process([record], ctx_a)
        ctx_a.commit()
    merged = stored_memory(ctx_a, mid)
    assert merged["source_event_ids"] == ["e-1", "e-3", "e-5"], "e-3 merged as a near dup"
    first.process([_delete(mid, ("e-1", "e-3", "e-5"))], ctx_a)
    first.process(later, ctx_a)
    ctx_a.commit()

    replay = memorize_agent_factory()
    ctx_b = batch_ctx_factory("content", "memories", name="replay")
    replay.process([_delete(mid, ("e-1", "e-3", "e-5"))], ctx_b)
    for record in [*events, *later]:
        replay.process([record], ctx_b)
        ctx_b.commit()
    assert all(m["deleted"] for m in ctx_b.sent_to("memories.v1")), "nothing came back"
    assert stored_memory(ctx_b, mid) == stored_memory(ctx_a, mid)
    final = stored_memory(ctx_b, mid)
    assert final["occurrence_count"] == 4 and final["source_event_ids"] == [
        "e-1", "e-3", "e-5", "e-6"]
    assert final["event_id"] == "cmd-1" and final["value"] is None and "hunter2" not in repr(
        final)
