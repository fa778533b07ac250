"""Session summaries: event-time windows, extractive summaries, optional LLM rewriting."""

from agents.summarizing.extractive import Summary, summarize_window, summary_id, summary_record
from agents.summarizing.rewriter import ChatRewriter, CircuitBreaker, SummaryRewriter
from agents.summarizing.windows import (
    AddResult,
    Emission,
    Outcome,
    ScoredItem,
    SessionWindows,
)

__all__ = [
    "AddResult",
    "ChatRewriter",
    "CircuitBreaker",
    "Emission",
    "Outcome",
    "ScoredItem",
    "SessionWindows",
    "Summary",
    "SummaryRewriter",
    "summarize_window",
    "summary_id",
    "summary_record",
]
