"""Context packs: summaries and memories, deduplicated, packed into a token budget."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streams.common.content import clip_highlight, normalize_text

SUPERSEDED_MARK = "[superseded]"


@dataclass(frozen=True)
class Piece:
    """One piece of context with the ids of the events behind it."""

    kind: str  # "summary" or "memory"
    id: str
    text: str
    source_ids: tuple[str, ...]
    similarity: float | None = None
    tokens: int = 0
    valid_from: int | None = None  # memories: when first stated (epoch ms)
    valid_until: int | None = None  # superseded memories: when the value changed
    superseded_ids: tuple[str, ...] = ()  # summaries: superseded memories they draw on


def pack(
    candidates: Iterable[Piece], budget: int, count_tokens: Callable[[str], int]
) -> tuple[list[Piece], int]:
    """Keep candidates in order, skipping repeats (same id or same normalized text) and
    any piece that no longer fits; return the pieces and the tokens they use."""
    packed: list[Piece] = []
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    used = 0
    for piece in candidates:
        norm = normalize_text(piece.text)
        if piece.id in seen_ids or not norm or norm in seen_texts:
            continue
        tokens = count_tokens(piece.text)
        if used + tokens > budget:
            continue  # a smaller piece later may still fit
        seen_ids.add(piece.id)
        seen_texts.add(norm)
        packed.append(Piece(piece.kind, piece.id, piece.text, piece.source_ids,
                            piece.similarity, tokens, piece.valid_from, piece.valid_until,
                            piece.superseded_ids))
        used += tokens
    return packed, used


def mark_superseded(summary: str, superseded: Iterable[str], *, drop: bool) -> str:
    """The summary with its highlight lines that quote a superseded memory's text dropped
    (``drop``) or marked ``[superseded]``: a summary is derived from events, and an event
    may state a value that has changed since."""
    quoted = {clip_highlight(t) for t in superseded if t.strip()}
    if not quoted:
        return summary
    lines = []
    for line in summary.split("\n"):
        if line.startswith("- ") and any(line[2:].startswith(q) for q in quoted):
            if drop:
                continue
            line = f"- {SUPERSEDED_MARK} {line[2:]}"
        lines.append(line)
    return "\n".join(lines)
