"""Extractive summaries: counts, outcome rate, key terms, highlights, deterministic ids."""

from __future__ import annotations

from agents.summarizing import summarize_window, summary_id, summary_record

T0 = 1_793_520_000_000  # 2026-11-01 08:00 UTC
HOUR = 3_600_000


def window(events: dict[str, list[object]], texts: dict[str, str]) -> dict[str, object]:
    return {"tenant": "acme", "session_id": "s1", "start": T0, "end": T0 + HOUR,
            "emitted": True, "events": events, "texts": texts}


def sample() -> dict[str, object]:
    texts = {
        "hk": "How do I rotate the billing keys?",
        "hr": "Restart the search index after the deploy.",
        "hn": "Noted: the nightly backup moved to 2am.",
    }
    # event id -> [revision, kind, content hash, value, outcome quality, event time]
    events = {
        "e1": [0, "QUERY", "hk", None, None, T0 + 1000],
        "e2": [1, "QUERY", "hk", 0.4, None, T0 + 2000],
        "e3": [0, "QUERY", "hk", None, None, T0 + 3000],
        "e4": [2, "RESPONSE", "hr", 0.95, 1.0, T0 + 4000],
        "e5": [0, "OUTCOME", "hn", None, 0.0, T0 + 5000],
        "e6": [0, "TOOL_CALL", "hr", None, 0.5, T0 + 6000],
    }
    return window(events, texts)


def test_counts_outcome_rate_and_event_ids() -> None:
    summary = summarize_window(sample())
    assert summary.counts_by_kind == {"OUTCOME": 1, "QUERY": 3, "RESPONSE": 1, "TOOL_CALL": 1}
    assert summary.outcome_rate == 1 / 3  # SUCCESS among the three reported outcomes
    assert summary.event_ids == ("e1", "e2", "e3", "e4", "e5", "e6")
    assert summary.summary_id == summary_id("acme", "s1", T0)
    assert summary.method == "extractive"


def test_highlights_rank_value_and_repetition() -> None:
    summary = summarize_window(sample(), max_highlights=2)
    # hr: value 0.95, x2 -> 1.2; hk: value 0.4, x3 -> 0.4 + 0.25*log2(3) = 0.80; hn: 0
    assert [h.text for h in summary.highlights] == [
        "Restart the search index after the deploy.", "How do I rotate the billing keys?"]
    assert [h.count for h in summary.highlights] == [2, 3]
    assert "Highlights:" in summary.text and "(value 0.95, x2)" in summary.text
    assert "nightly backup" not in summary.text


def test_key_terms_weighted_by_events_without_stopwords() -> None:
    summary = summarize_window(sample())
    assert summary.key_terms[:4] == ("billing", "keys", "rotate", "deploy")
    assert not {"the", "how", "after"} & set(summary.key_terms)


def test_no_outcomes_means_null_rate() -> None:
    w = window({"e1": [0, "NOTE", "h", None, None, T0]}, {"h": "A note."})
    summary = summarize_window(w)
    assert summary.outcome_rate is None
    assert "Outcomes" not in summary.text and "(unrated)" in summary.text


def test_record_is_deterministic_and_time_comes_from_the_window() -> None:
    a = summary_record(summarize_window(sample()))
    b = summary_record(summarize_window(sample()))
    assert a == b
    assert a["event_time"] == a["window_end"] == T0 + HOUR
    changed = sample()
    changed["events"]["e7"] = [0, "QUERY", "hk", None, None, T0 + 9000]  # type: ignore[index]
    c = summary_record(summarize_window(changed))
    assert c["summary_id"] == a["summary_id"] and c["event_id"] != a["event_id"]
    assert summary_id("acme", "s1", T0) != summary_id("acme", "s1", T0 + HOUR)
    assert summary_id("acme", "s1", T0) != summary_id("globex", "s1", T0)
