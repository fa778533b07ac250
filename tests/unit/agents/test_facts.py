"""The fact-slot conflict detector on plain strings (no model)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agents.facts import Action, Slot, Verdict, compare, compare_facts, decide_near, extract_slots

DATA = Path(__file__).resolve().parents[2] / "data" / "facts"


def pairs(name: str) -> list[list[str]]:
    """The rows of one test set: old, new (and for value changes, the slot kind)."""
    rows = []
    for line in (DATA / f"{name}.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            rows.append(line.split("\t"))
    return rows


def kinds(text: str) -> list[tuple[str, str]]:
    return [(s.kind, s.value) for s in extract_slots(text)]


def test_the_sets_are_big_enough() -> None:
    assert len(pairs("paraphrases")) >= 40
    assert len(pairs("value_changes")) >= 40
    assert len(pairs("lookalikes")) >= 40


@pytest.mark.parametrize(("old", "new"), pairs("paraphrases"))
def test_paraphrase_is_the_same_fact(old: str, new: str) -> None:
    assert compare_facts(old, new).verdict is Verdict.SAME


@pytest.mark.parametrize(("old", "new", "kind"), pairs("value_changes"))
def test_changed_value_supersedes(old: str, new: str, kind: str) -> None:
    assert compare_facts(old, new).verdict is Verdict.SUPERSEDES
    # ...and in the other direction: changing back is a change too.
    assert compare_facts(new, old).verdict is Verdict.SUPERSEDES


def test_weekday_change_names_the_slot_and_both_values() -> None:
    found = compare_facts("The auth service deploys on Friday.",
                          "The auth service deploys on Tuesday.")
    assert (found.kind, found.old_value, found.new_value) == ("weekday", "4", "1")


def test_port_change_is_a_port_slot() -> None:
    found = compare_facts("auth listens on port 6379", "auth listens on port 8443")
    assert (found.verdict, found.kind) == (Verdict.SUPERSEDES, "port")


def test_a_different_subject_name_is_distinct_not_superseding() -> None:
    found = compare_facts("Alice is the release manager.", "Bob is the release manager.")
    assert (found.verdict, found.kind) == (Verdict.DISTINCT, "entity")


def test_a_swapped_modifier_is_distinct() -> None:
    found = compare_facts("The auth service deploys on Friday.",
                          "The billing service deploys on Friday.")
    assert (found.verdict, found.old_value, found.new_value) == (
        Verdict.DISTINCT, "auth", "billing")


def test_an_added_detail_is_not_a_conflict() -> None:
    found = compare_facts("Deploys are on Friday.", "Deploys are on Friday at 3pm.")
    assert found.verdict is Verdict.SAME


def test_a_capitalized_first_word_is_not_a_changed_name() -> None:
    found = compare_facts("Standup is at 9:30.", "The standup is at 9:30.")
    assert found.verdict is Verdict.SAME


@pytest.mark.parametrize(("old", "new"), pairs("lookalikes"))
def test_lookalike_never_supersedes(old: str, new: str) -> None:
    assert compare_facts(old, new).verdict is not Verdict.SUPERSEDES


def test_a_name_replaced_by_an_identifier_like_name_supersedes() -> None:
    found = compare_facts("The SSO provider is Okta.", "The SSO provider is Auth0.")
    assert (found.verdict, found.old_value, found.new_value) == (
        Verdict.SUPERSEDES, "okta", "auth0")


def test_questions_with_other_values_stay_apart_and_never_supersede() -> None:
    found = compare_facts("How do I restart the billing service on cluster 0?",
                          "How do I restart the billing service on cluster 5?")
    assert (found.verdict, found.kind) == (Verdict.DISTINCT, "number")
    assert compare_facts("is the standup at 9:30", "is the standup at 10:00").verdict \
        is Verdict.DISTINCT


def test_swapped_names_in_the_same_frame_supersede() -> None:
    found = compare_facts("Alice owns billing and Bob owns auth.",
                          "Bob owns billing and Alice owns auth.")
    assert found.verdict is Verdict.SUPERSEDES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("standup at 9:30am", [("time", "09:30")]),
        ("standup at 9.30", [("number", "9.3")]),
        ("meet at 3 pm", [("time", "15:00")]),
        ("meet at 12am", [("time", "00:00")]),
        ("due 2026-12-01", [("date", "2026-12-1")]),
        ("due 12/1", [("date", "12-1")]),
        ("due on 3 March", [("date", "3-3")]),
        ("due on March 3rd", [("date", "3-3")]),
        ("every Friday", [("weekday", "4")]),
        ("on Fridays", [("weekday", "4")]),
        ("release v2.4.0", [("version", "2.4.0")]),
        ("node version 20", [("version", "20")]),
        ("port 8,443", [("port", "8443")]),
        ("host db1.internal:5432", [("host", "db1.internal"), ("port", "5432")]),
        ("mail ops@example.com", [("email", "ops@example.com")]),
        ("see https://x.example.com/a.", [("url", "https://x.example.com/a")]),
        ("ticket 4521", [("identifier", "4521")]),
        ("issue #12", [("identifier", "12")]),
        ("region us-east-1", [("identifier", "us-east-1")]),
        ("set MAX_POOL_SIZE", [("identifier", "max_pool_size")]),
        ("two brokers", [("number", "2")]),
        ("call Priya Raman today", [("entity", "priya raman"), ("day", "today")]),
        ("10.0.3.17 is up", [("host", "10.0.3.17")]),
        ("you may go", []),
        ("", []),
    ],
)
def test_slots_are_found_and_canonical(text: str, expected: list[tuple[str, str]]) -> None:
    assert kinds(text) == expected


def test_slot_positions_point_at_tokens() -> None:
    assert extract_slots("on port 8443") == [Slot("port", "8443", 2, 3)]


@pytest.mark.parametrize(
    "text",
    ["\x00\x01", "::::", "9" * 5000, "a" * 10_000, "\u202e\u200b", "@@@.@@@", "https://", "#",
     "José's café opens at 8 a.m.", "Straße 5", "数据库在周五部署"],
)
def test_hostile_inputs_never_raise_and_equal_text_is_the_same(text: str) -> None:
    assert compare_facts(text, text).verdict is Verdict.SAME
    compare_facts(text, "The auth service deploys on Friday.")


def test_long_texts_are_compared_quickly() -> None:
    words = "the auth service deploys on Friday at port 8443 with Alice and v1.2.3 ".split()
    long_a = " ".join(words[i % len(words)] for i in range(5000))
    long_b = " ".join(words[(i * 7) % len(words)] for i in range(5000))
    started = time.perf_counter()
    compare_facts(long_a, long_b)
    compare_facts(long_a + " on Tuesday", long_a)
    assert time.perf_counter() - started < 1.0


def test_the_analysis_cache_decides_as_the_uncached_analysis_and_holds_short_texts_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = pairs("value_changes") + pairs("lookalikes") + pairs("paraphrases")
    rows += [["x " * 200 + "on Friday", "x " * 200 + "on Tuesday"]]  # over the cached length
    both_ways = [(r[0], r[1]) for r in rows] + [(r[1], r[0]) for r in rows]
    compare.analysis_cache_clear()
    cached = [compare_facts(a, b) for a, b in both_ways]
    assert [compare_facts(a, b) for a, b in both_ways] == cached  # now all from the cache
    short = {t for pair in both_ways for t in pair if len(t) <= compare._CACHED_CHARS}
    assert compare._analyse_cached.cache_info().currsize == len(short) < compare._CACHED
    monkeypatch.setattr(compare, "_analysed", compare._analyse)
    assert [compare_facts(a, b) for a, b in both_ways] == cached


def test_decisions_are_deterministic() -> None:
    rows = pairs("value_changes") + pairs("lookalikes") + pairs("paraphrases")
    first = [compare_facts(r[0], r[1]) for r in rows]
    assert [compare_facts(r[0], r[1]) for r in rows] == first


@pytest.mark.parametrize(
    ("old", "new", "similarity", "action"),
    [
        ("deploys on Friday", "deploys on Fridays", 0.95, Action.MERGE),
        ("deploys on Friday", "deploys on Fridays", 0.89, Action.NEW),
        ("The auth service deploys on Friday.", "The auth service deploys on Tuesday.", 0.86,
         Action.SUPERSEDE),
        ("The auth service deploys on Friday.", "Auth deploys on Tuesday.", 0.84, Action.NEW),
        ("My manager is Priya Raman.", "My manager is Daniel Kim.", 0.65, Action.SUPERSEDE),
        ("My manager is Priya Raman.", "My manager is Daniel Kim.", 0.45, Action.NEW),
        ("The auth service deploys on Friday.", "The billing service deploys on Friday.", 0.99,
         Action.NEW),
    ],
)
def test_decide_near(old: str, new: str, similarity: float, action: Action) -> None:
    found = decide_near(old, new, similarity, merge_threshold=0.9, supersede_threshold=0.85,
                        same_frame_threshold=0.5)
    assert found.action is action
