"""The summarize agent: scored events in, one summary per (tenant, session, window) out.

State: ``summary-windows`` (per partition: each window's latest event revisions, the
partition's stream time, and the deleted memories). Windows close by event time (see
agents/summarizing/windows.py); the summary goes to the compacted ``summaries.v1`` keyed by
tenant and summary id, so a late event within the grace period simply replaces it, and so
does the summary re-derived without a memory a user deleted (a DELETE on commands.v1).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from agents.summarizing import (
    Emission,
    Outcome,
    ScoredItem,
    SessionWindows,
    SummaryRewriter,
    summarize_window,
    summary_record,
)
from streams.common.codec import to_millis
from streams.common.observability import WorkerMetrics
from streams.processing.api import Agent, BatchContext, InputRecord, StoreAccess

logger = logging.getLogger(__name__)

STORE = "summary-windows"


def scored_item(value: dict[str, Any]) -> ScoredItem:
    """The fields of a scored.v1 record that summaries use."""
    return ScoredItem(
        tenant=value["tenant"],
        session_id=value["session_id"],
        event_id=value["event_id"],
        event_time=to_millis(value["event_time"]),
        revision=int(value.get("revision") or 0),
        kind=value["kind"],
        text=value["text"],
        content_hash=value["content_hash"],
        value=value.get("value"),
        outcome_quality=(value.get("components") or {}).get("outcome_quality"),
    )


class SummarizeAgent(Agent):
    """Tumbling event-time windows per session; extractive summaries, optionally rewritten."""

    name = "summarize"
    # commands.v1: a deleted memory must leave the summaries that quote it.
    inputs = ("scored.v1", "commands.v1")
    stores = (STORE,)

    def __init__(
        self,
        *,
        window_s: float,
        grace_s: float,
        max_highlights: int,
        metrics: WorkerMetrics,
        rewriter: SummaryRewriter | None = None,
        rewrite_budget_s: float = 10.0,
    ) -> None:
        self.window_ms = int(window_s * 1000)
        self.grace_ms = int(grace_s * 1000)
        self.max_highlights = max_highlights
        self.metrics = metrics
        self.rewriter = rewriter
        self.rewrite_budget_s = rewrite_budget_s
        self._windows: dict[int, SessionWindows] = {}

    def rebuild(self, partitions: frozenset[int], stores: StoreAccess) -> None:
        """Index the committed windows (and stream time) of the owned partitions."""
        self._windows = {
            p: SessionWindows(stores.store(STORE, p), window_ms=self.window_ms,
                              grace_ms=self.grace_ms)
            for p in partitions
            if stores.has(STORE, p)
        }

    def process(self, records: list[InputRecord], ctx: BatchContext) -> None:
        """Add each record to its window in partition order; emit the summaries due."""
        started = time.monotonic()
        for record in records:
            windows = self._windows[record.partition]
            if record.topic == "commands.v1":
                self._forget(record, windows, ctx, started)
                continue
            result = windows.add(scored_item(record.value))
            if result.outcome in (Outcome.LATE, Outcome.FULL, Outcome.FORGOTTEN):
                self.metrics.summary_dropped.labels(result.outcome.value).inc()
                logger.info(
                    "summarize: %s[%d]@%d left out of its window: %s (stream time %d)",
                    record.topic, record.partition, record.offset, result.outcome.value,
                    windows.stream_time,
                )
            for emission in result.emissions:
                self._emit(emission, ctx, started)
        for partition in sorted({r.partition for r in records}):
            self._windows[partition].flush()

    def _forget(self, record: InputRecord, windows: SessionWindows, ctx: BatchContext,
                started: float) -> None:
        """Re-derive every summary of the tenant that quoted the deleted memory."""
        v = record.value
        if v["action"] != "DELETE":
            return
        emissions = windows.forget(v["tenant"], v["memory_id"], list(v["source_event_ids"]))
        for emission in emissions:
            self._emit(emission, ctx, started)
        logger.info("summarize: memory %s of tenant %s forgotten, %d summaries re-derived "
                    "(%s[%d]@%d)", v["memory_id"], v["tenant"], len(emissions), record.topic,
                    record.partition, record.offset)

    def _emit(self, emission: Emission, ctx: BatchContext, started: float) -> None:
        summary = summarize_window(emission.window, max_highlights=self.max_highlights)
        if self.rewriter is not None:
            if time.monotonic() - started < self.rewrite_budget_s:
                text = self.rewriter.rewrite(summary)
                if text is not None:
                    summary = dataclasses.replace(summary, text=text, method=self.rewriter.name)
            else:
                self.metrics.summary_rewrites.labels("skipped_budget").inc()
        ctx.send(
            "summaries.v1",
            summary_record(summary),
            key=f"{summary.tenant}:{summary.summary_id}",
        )
        self.metrics.summaries.labels("closed" if emission.first else "updated").inc()
