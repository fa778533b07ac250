"""Memorize with changed facts, on the real bundled embedding model: a near duplicate that
changes a value supersedes the memory it is near; paraphrases still merge."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from batch_ctx import BatchCtxFactory, RecordingBatchContext, avro_bytes, decoded, scored

from agents.dedupe import content_hash, memory_id, restatement_id
from agents.memorize import MemorizeAgent
from streams.common.keys import SEP
from streams.models.index import TenantVectors

FRIDAY = "The auth service deploys on Friday."
TUESDAY = "The auth service deploys on Tuesday."
FRIDAY_PARAPHRASE = "Auth service deployments happen on Fridays."
T0, T1, T2 = 1_700_000_000_000, 1_700_000_060_000, 1_700_000_120_000
ALL = frozenset({0})
DATA = Path(__file__).resolve().parents[2] / "data" / "facts"

MemorizeFactory = Callable[..., MemorizeAgent]


@pytest.fixture
def ctx(batch_ctx_factory: BatchCtxFactory) -> RecordingBatchContext:
    return batch_ctx_factory("content", "memories")


@pytest.fixture
def agent(memorize_agent_factory: MemorizeFactory) -> MemorizeAgent:
    return memorize_agent_factory()


def stored(ctx: RecordingBatchContext, mid: str, tenant: str = "acme") -> Any:
    return ctx.store("memories", 0).get(f"{tenant}{SEP}{mid}")


def owner(ctx: RecordingBatchContext, text: str, tenant: str = "acme") -> str:
    """The memory id the content of ``text`` belongs to."""
    entry = ctx.store("content", 0).get(f"{tenant}{SEP}{content_hash(text)}")
    assert entry is not None
    return str(entry["memory_id"])


def run(agent: MemorizeAgent, ctx: RecordingBatchContext, *batches: list[Any]) -> None:
    for batch in batches:
        agent.process(batch, ctx)
        ctx.commit()


def supersessions(agent: MemorizeAgent, slot: str) -> float:
    value = agent.metrics.registry.get_sample_value(
        "memstream_supersessions_total", {"slot": slot})
    return 0.0 if value is None else value


def test_a_changed_weekday_supersedes_instead_of_merging(
    agent: MemorizeAgent, ctx: RecordingBatchContext
) -> None:
    run(agent, ctx, [scored(FRIDAY, event_id="e-1", event_time=T0)],
        [scored(TUESDAY, event_id="e-2", event_time=T1)])

    old_id, new_id = memory_id("acme", FRIDAY), memory_id("acme", TUESDAY)
    sent = ctx.sent_to("memories.v1")
    assert [m["memory_id"] for m in sent] == [old_id, new_id, old_id]
    new, old = sent[1], sent[2]
    assert (new["text"], new["supersedes"], new["superseded_by"]) == (TUESDAY, old_id, None)
    assert (new["valid_from"], new["occurrence_count"]) == (T1, 1)
    assert (old["text"], old["superseded_by"], old["superseded_at"]) == (FRIDAY, new_id, T1)
    assert (old["valid_from"], old["occurrence_count"], old["merges"]) == (T0, 1, [])
    assert stored(ctx, old_id)["superseded_by"] == new_id
    assert owner(ctx, TUESDAY) == new_id
    assert supersessions(agent, "weekday") == 1
    for record in sent:
        avro_bytes("memories.v1", record)  # the memory-2 schema takes them


def test_the_superseded_memory_leaves_the_near_duplicate_index(
    agent: MemorizeAgent, ctx: RecordingBatchContext
) -> None:
    run(agent, ctx, [scored(FRIDAY, event_id="e-1", event_time=T0)],
        [scored(TUESDAY, event_id="e-2", event_time=T1)],
        [scored("The auth service deploys on Fridays now.", event_id="e-3", event_time=T2)])

    index = agent.indexes.get("acme")
    assert index is not None
    assert memory_id("acme", FRIDAY) not in index
    # Compared against the current value (Tuesday), the third statement supersedes it.
    third = owner(ctx, "The auth service deploys on Fridays now.")
    assert stored(ctx, memory_id("acme", TUESDAY))["superseded_by"] == third
    assert stored(ctx, third)["supersedes"] == memory_id("acme", TUESDAY)


def test_a_paraphrase_still_merges(agent: MemorizeAgent, ctx: RecordingBatchContext) -> None:
    run(agent, ctx, [scored(FRIDAY, event_id="e-1")], [scored(FRIDAY_PARAPHRASE, event_id="e-2")])

    memory = stored(ctx, memory_id("acme", FRIDAY))
    assert memory["occurrence_count"] == 2
    assert memory["superseded_by"] is None
    assert owner(ctx, FRIDAY_PARAPHRASE) == memory["memory_id"]


def test_a_lookalike_about_another_subject_stays_separate(
    agent: MemorizeAgent, ctx: RecordingBatchContext
) -> None:
    west, east = "The west region failover is manual.", "The east region failover is manual."
    run(agent, ctx, [scored(west, event_id="e-1")], [scored(east, event_id="e-2")])

    assert owner(ctx, east) == memory_id("acme", east)
    for text in (west, east):
        memory = stored(ctx, memory_id("acme", text))
        assert (memory["occurrence_count"], memory["supersedes"], memory["superseded_by"]) == (
            1, None, None)


def test_the_old_value_stated_again_supersedes_the_current_one(
    agent: MemorizeAgent, ctx: RecordingBatchContext
) -> None:
    run(agent, ctx, [scored(FRIDAY, event_id="e-1", event_time=T0)],
        [scored(TUESDAY, event_id="e-2", event_time=T1)],
        [scored(FRIDAY, event_id="e-3", event_time=T2)])

    again = restatement_id("acme", FRIDAY, "e-3")
    assert owner(ctx, FRIDAY) == again
    current = stored(ctx, again)
    assert (current["text"], current["supersedes"], current["valid_from"]) == (
        FRIDAY, memory_id("acme", TUESDAY), T2)
    assert stored(ctx, memory_id("acme", TUESDAY))["superseded_by"] == again
    first = stored(ctx, memory_id("acme", FRIDAY))
    assert (first["superseded_by"], first["occurrence_count"]) == (memory_id("acme", TUESDAY), 1)
    index = agent.indexes.get("acme")
    assert index is not None and again in index and len(index) == 1


def test_an_older_statement_arriving_late_is_superseded_already(
    agent: MemorizeAgent, ctx: RecordingBatchContext
) -> None:
    run(agent, ctx, [scored(TUESDAY, event_id="e-2", event_time=T1)],
        [scored(FRIDAY, event_id="e-1", event_time=T0)])

    late, current = stored(ctx, memory_id("acme", FRIDAY)), stored(ctx, memory_id("acme", TUESDAY))
    assert (late["superseded_by"], late["superseded_at"]) == (current["memory_id"], T1)
    assert (current["superseded_by"], current["supersedes"]) == (None, late["memory_id"])
    index = agent.indexes.get("acme")
    assert index is not None and list(index.nearest(
        agent.embedder.embed([FRIDAY])[0], k=5)) == [(current["memory_id"], pytest.approx(
            0.956, abs=0.01))]


def test_rebuild_leaves_superseded_memories_out_of_the_index(
    memorize_agent_factory: MemorizeFactory, ctx: RecordingBatchContext
) -> None:
    run(memorize_agent_factory(), ctx, [scored(FRIDAY, event_id="e-1", event_time=T0)],
        [scored(TUESDAY, event_id="e-2", event_time=T1)])

    restarted = memorize_agent_factory()
    restarted.rebuild(ALL, ctx.committed())
    index = restarted.indexes.get("acme")
    assert index is not None
    assert memory_id("acme", TUESDAY) in index
    assert memory_id("acme", FRIDAY) not in index


def test_supersession_is_reproduced_by_a_replay(
    memorize_agent_factory: MemorizeFactory, batch_ctx_factory: BatchCtxFactory
) -> None:
    def batches() -> list[list[Any]]:
        return [[scored(FRIDAY, event_id="e-1", event_time=T0, offset=0),
                 scored("Postgres listens on port 5432.", event_id="e-2", event_time=T0)],
                [scored(TUESDAY, event_id="e-3", event_time=T1, offset=2),
                 scored("Postgres listens on port 6432.", event_id="e-4", event_time=T1),
                 scored(FRIDAY_PARAPHRASE, event_id="e-5", event_time=T1)],
                [scored(FRIDAY, event_id="e-6", event_time=T2)]]

    runs = []
    for name in ("first", "replay"):
        ctx = batch_ctx_factory("content", "memories", name=name)
        run(memorize_agent_factory(), ctx, *batches())
        runs.append([(s.key, avro_bytes("memories.v1", s.record)) for s in ctx.sent])
    assert runs[0] == runs[1]
    # 2 new; 2 supersessions (2 records each); the Friday paraphrase after Tuesday
    # supersedes Tuesday (2); Friday again merges into that current Friday memory (1).
    assert len(runs[0]) == 9


def test_supersede_thresholds_decide_how_far_a_change_may_move_the_embedding(
    memorize_agent_factory: MemorizeFactory, batch_ctx_factory: BatchCtxFactory
) -> None:
    old, new = "My manager is Priya Raman.", "My manager is Daniel Kim."  # cosine ~0.65
    for name, frame, superseded in (("strict", 0.9, False), ("default", 0.5, True)):
        ctx = batch_ctx_factory("content", "memories", name=name)
        agent = memorize_agent_factory(same_frame_threshold=frame)
        run(agent, ctx, [scored(old, event_id="e-1")], [scored(new, event_id="e-2")])
        found = stored(ctx, memory_id("acme", old))["superseded_by"]
        assert (found == memory_id("acme", new)) is superseded, name
        assert found is not None or owner(ctx, new) == memory_id("acme", new)  # beside it


def _pairs(name: str) -> list[list[str]]:
    lines = (DATA / f"{name}.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


def _merged(agent: MemorizeAgent, ctx: RecordingBatchContext, rows: list[list[str]],
            prefix: str) -> list[bool]:
    """Each pair in a tenant of its own, old text first: was the new text merged into it?"""
    run(agent, ctx,
        [scored(r[0], event_id=f"{prefix}-{i}-a", tenant=f"{prefix}{i}", event_time=T0)
         for i, r in enumerate(rows)],
        [scored(r[1], event_id=f"{prefix}-{i}-b", tenant=f"{prefix}{i}", event_time=T1)
         for i, r in enumerate(rows)])
    return [owner(ctx, r[1], f"{prefix}{i}") == memory_id(f"{prefix}{i}", r[0])
            for i, r in enumerate(rows)]


def test_on_the_sets_no_changed_value_merges_and_paraphrase_recall_holds(
    memorize_agent_factory: MemorizeFactory, batch_ctx_factory: BatchCtxFactory
) -> None:
    with_facts = memorize_agent_factory()
    ctx = batch_ctx_factory("content", "memories", name="facts")
    changes = _pairs("value_changes")
    paraphrases = _pairs("paraphrases")
    lookalikes = _pairs("lookalikes")
    changed_merged = _merged(with_facts, ctx, changes, "v")
    para_merged = _merged(with_facts, ctx, paraphrases, "p")
    look_merged = _merged(with_facts, ctx, lookalikes, "l")

    # Without the detector a paraphrase merges when its cosine reaches the threshold.
    vectors = with_facts.embedder.embed([r[0] for r in paraphrases])
    others = with_facts.embedder.embed([r[1] for r in paraphrases])
    baseline = [float(a @ b) >= 0.9 for a, b in zip(vectors, others, strict=True)]

    assert [r for r, m in zip(changes, changed_merged, strict=True) if m] == []
    assert sum(para_merged) >= sum(baseline)
    assert [r for r, m in zip(lookalikes, look_merged, strict=True) if m] == []
    superseded = sum(
        stored(ctx, memory_id(f"v{i}", r[0]), f"v{i}")["superseded_by"] is not None
        for i, r in enumerate(changes))
    # 42 of 48 at the 0.85 supersede threshold; the 6 others (new names, one port) only
    # differ in their value and pass at the same-frame threshold (0.5).
    assert superseded >= 46


def test_a_deleted_changed_value_replayed_after_its_deletion_stays_deleted(
    agent: MemorizeAgent, ctx: RecordingBatchContext
) -> None:
    """A replay reads the deletion of Tuesday before Tuesday itself: it must neither come
    back nor supersede Friday."""
    command = {"tenant": "acme", "memory_id": memory_id("acme", TUESDAY),
               "event_id": "delete-1", "action": "DELETE", "event_time": T1,
               "requested_by": "read-service", "source_event_ids": ["e-2"]}
    run(agent, ctx, [scored(FRIDAY, event_id="e-1", event_time=T0)],
        [decoded("commands.v1", command)], [scored(TUESDAY, event_id="e-2", event_time=T1)])

    assert stored(ctx, memory_id("acme", FRIDAY))["superseded_by"] is None
    gone = stored(ctx, memory_id("acme", TUESDAY))
    assert gone["deleted"] and gone["text"] == "" and gone["supersedes"] is None
    assert all(m["deleted"] or m["text"] == FRIDAY for m in ctx.sent_to("memories.v1"))


@pytest.mark.parametrize("restart", [False, True], ids=["running", "after-rebuild"])
def test_a_restatement_is_searched_with_the_batch_prefetch(
    memorize_agent_factory: MemorizeFactory, ctx: RecordingBatchContext,
    monkeypatch: pytest.MonkeyPatch, restart: bool,
) -> None:
    """A repeated stream states each changed fact again: its search joins the batch's one
    pass over the tenant's vectors instead of a pass of its own, and decides the same."""
    agent = memorize_agent_factory()
    run(agent, ctx, [scored(FRIDAY, event_id="e-1", event_time=T0)],
        [scored(TUESDAY, event_id="e-2", event_time=T1)])
    if restart:
        agent = memorize_agent_factory()
        agent.rebuild(ALL, ctx.committed())
    searches: list[int] = []
    search = TenantVectors.search

    def counted(self: TenantVectors, *args: Any, **kwargs: Any) -> Any:
        searches.append(1)
        return search(self, *args, **kwargs)

    monkeypatch.setattr(TenantVectors, "search", counted)
    run(agent, ctx, [scored(FRIDAY, event_id="e-3", event_time=T2)])

    assert searches == [], "the restatement searched every vector on its own"
    again = restatement_id("acme", FRIDAY, "e-3")
    assert owner(ctx, FRIDAY) == again
    assert stored(ctx, memory_id("acme", TUESDAY))["superseded_by"] == again
