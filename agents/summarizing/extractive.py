"""Extractive session summaries: pure functions of a window's events, no model needed.

A summary says what happened in one session over one window: how many events of each
kind, the share of reported outcomes that succeeded, the key terms, and the highlights
(the distinct contents ranked by value and by how often they came up). Its ids derive
from the data only, so replaying the log re-produces the same record byte for byte:
``summary_id`` from (tenant, session, window start), ``event_id`` from the summary id and
the record's content, ``event_time`` is the window end.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.common.content import clip_highlight

# Fixed forever: changing either would give every summary a new id.
SUMMARY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "memstream:summary")
SUMMARY_VERSION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "memstream:summary-version")

MAX_KEY_TERMS = 8
# How much repetition counts against value when ranking highlights: each doubling of a
# content's occurrences is worth a quarter of the value scale.
REPEAT_WEIGHT = 0.25
# outcome_quality of a SUCCESS (agents/scoring/scorer.py): the only "success" outcome.
SUCCESS_QUALITY = 1.0

_WORD = re.compile(r"[^\W\d_][\w'-]*")
_STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before
    being below between both but by can could did do does doing done down during each few
    for from further get got had has have having he her here hers him his how i if in into
    is it its itself just me more most my no nor not now of off on once only or other our
    out over own please same she should so some such than that the their them then there
    these they this those through to too under until up use used using very was we were
    what when where which while who whom why will with would you your yours""".split()
)


@dataclass(frozen=True)
class Highlight:
    """One distinct content of the window, with how it ranks."""

    text: str
    count: int
    value: float | None


@dataclass(frozen=True)
class Summary:
    """One window's summary, before it becomes a summaries.v1 record."""

    tenant: str
    session_id: str
    summary_id: str
    window_start: int
    window_end: int
    text: str
    key_terms: tuple[str, ...]
    counts_by_kind: dict[str, int]
    outcome_rate: float | None
    event_ids: tuple[str, ...]
    highlights: tuple[Highlight, ...]
    method: str = "extractive"


def summary_id(tenant: str, session_id: str, window_start: int) -> str:
    """The stable id of a session's window: same tenant, session and start, same id."""
    return str(uuid.uuid5(SUMMARY_NAMESPACE, f"{tenant}\x00{session_id}\x00{window_start}"))


def summarize_window(window: dict[str, Any], *, max_highlights: int = 5) -> Summary:
    """The extractive summary of a window's state (see ``windows.py`` for its shape)."""
    events: dict[str, list[Any]] = window["events"]
    texts: dict[str, str] = window["texts"]
    kinds = Counter(e[1] for e in events.values())
    outcomes = [e[4] for e in events.values() if e[4] is not None]
    outcome_rate = (
        sum(1 for q in outcomes if q == SUCCESS_QUALITY) / len(outcomes) if outcomes else None
    )
    highlights = _highlights(events, texts)
    terms = _key_terms(events, texts)
    tenant, session, start, end = (
        window["tenant"], window["session_id"], int(window["start"]), int(window["end"])
    )
    counts = {k: kinds[k] for k in sorted(kinds)}
    chosen = highlights[:max_highlights]
    return Summary(
        tenant=tenant,
        session_id=session,
        summary_id=summary_id(tenant, session, start),
        window_start=start,
        window_end=end,
        text=_text(session, start, end, len(events), counts, outcome_rate, len(outcomes),
                   terms, chosen),
        key_terms=terms,
        counts_by_kind=counts,
        outcome_rate=outcome_rate,
        event_ids=tuple(sorted(events)),
        highlights=tuple(chosen),
    )


def summary_record(summary: Summary) -> dict[str, Any]:
    """The summaries.v1 record: deterministic ids, event time = window end."""
    record: dict[str, Any] = {
        "tenant": summary.tenant,
        "summary_id": summary.summary_id,
        "session_id": summary.session_id,
        "window_start": summary.window_start,
        "window_end": summary.window_end,
        "event_time": summary.window_end,
        "text": summary.text,
        "key_terms": list(summary.key_terms),
        "counts_by_kind": dict(summary.counts_by_kind),
        "outcome_rate": summary.outcome_rate,
        "event_ids": list(summary.event_ids),
        "method": summary.method,
    }
    digest = hashlib.sha256(
        json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    version = f"{summary.summary_id}:{digest}"
    record["event_id"] = str(uuid.uuid5(SUMMARY_VERSION_NAMESPACE, version))
    return record


def _highlights(events: dict[str, list[Any]], texts: dict[str, str]) -> list[Highlight]:
    """Distinct contents by salience: value (unknown counts 0) plus repetition."""
    counts: Counter[str] = Counter()
    values: dict[str, float | None] = {}
    first: dict[str, int] = {}
    for rev in events.values():
        digest, value, when = rev[2], rev[3], int(rev[5])
        counts[digest] += 1
        if value is not None:
            known = values.get(digest)
            values[digest] = value if known is None else max(known, value)
        else:
            values.setdefault(digest, None)
        first[digest] = min(first.get(digest, when), when)

    def salience(digest: str) -> float:
        return (values[digest] or 0.0) + REPEAT_WEIGHT * math.log2(counts[digest])

    ranked = sorted(counts, key=lambda d: (-salience(d), -counts[d], first[d], d))
    return [Highlight(texts.get(d, ""), counts[d], values[d]) for d in ranked]


def _key_terms(events: dict[str, list[Any]], texts: dict[str, str]) -> tuple[str, ...]:
    """Words (not stop words, 3+ letters) by how many events' contents carry them."""
    per_content = Counter(rev[2] for rev in events.values())
    scores: Counter[str] = Counter()
    for digest, count in per_content.items():
        words = {w for w in _WORD.findall(texts.get(digest, "").casefold())
                 if len(w) >= 3 and w not in _STOPWORDS}
        for word in words:
            scores[word] += count
    ranked = sorted(scores, key=lambda w: (-scores[w], w))
    return tuple(ranked[:MAX_KEY_TERMS])


def _text(
    session: str,
    start: int,
    end: int,
    n_events: int,
    counts: dict[str, int],
    outcome_rate: float | None,
    n_outcomes: int,
    terms: tuple[str, ...],
    highlights: list[Highlight],
) -> str:
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    lines = [f"Session {session}, {_when(start)} to {_when(end)}: {n_events} events ({kinds})."]
    if outcome_rate is not None:
        lines.append(f"Outcomes: {outcome_rate:.0%} success of {n_outcomes} reported.")
    if terms:
        lines.append(f"Key terms: {', '.join(terms)}.")
    if highlights:
        lines.append("Highlights:")
        for h in highlights:
            value = "unrated" if h.value is None else f"value {h.value:.2f}"
            repeat = f", x{h.count}" if h.count > 1 else ""
            lines.append(f"- {clip_highlight(h.text)} ({value}{repeat})")
    return "\n".join(lines)


def _when(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
