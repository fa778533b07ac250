"""Fixtures of the agent tests: broker-free batch contexts, the real embedder, agent factories."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from batch_ctx import BatchCtxFactory, RecordingBatchContext

from agents.memorize import MemorizeAgent
from agents.score import ScoreAgent
from agents.scoring import ValueScorer, load_scorer_config
from streams.common.observability import WorkerMetrics
from streams.models.embedder import SentenceTransformerEmbedder


@pytest.fixture
def batch_ctx_factory(tmp_path: Path) -> Iterator[BatchCtxFactory]:
    """Make contexts over fresh stores under ``tmp_path/<name>``; closed after the test."""
    made: list[RecordingBatchContext] = []

    def make(
        *store_names: str, name: str = "worker", partitions: tuple[int, ...] = (0,)
    ) -> RecordingBatchContext:
        ctx = RecordingBatchContext(tmp_path / name, store_names, partitions)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real bundled all-MiniLM-L6-v2, loaded once (seconds)."""
    return SentenceTransformerEmbedder()


@pytest.fixture
def score_agent_factory() -> Callable[..., ScoreAgent]:
    """A score agent with the shipped scorer config and its own metrics."""

    def make(
        *, interaction_ttl_s: float = 7 * 24 * 3600, max_text_chars: int = 32_000
    ) -> ScoreAgent:
        return ScoreAgent(
            ValueScorer(load_scorer_config()),
            max_text_chars=max_text_chars,
            interaction_ttl_s=interaction_ttl_s,
            metrics=WorkerMetrics(),
        )

    return make


@pytest.fixture
def memorize_agent_factory(embedder: SentenceTransformerEmbedder) -> Callable[..., MemorizeAgent]:
    """A memorize agent on the real embedder (default threshold 0.9) with its own metrics."""

    def make(
        *, threshold: float = 0.9, max_text_chars: int = 32_000,
        supersede_threshold: float = 0.85, same_frame_threshold: float = 0.5,
    ) -> MemorizeAgent:
        return MemorizeAgent(
            embedder,
            threshold=threshold,
            max_text_chars=max_text_chars,
            embed_batch_size=64,
            metrics=WorkerMetrics(),
            supersede_threshold=supersede_threshold,
            same_frame_threshold=same_frame_threshold,
        )

    return make
