"""The embedder on the real bundled all-MiniLM-L6-v2 model, and the vector byte form."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from streams.models.embedder import (
    DEFAULT_EMBEDDING_MODEL,
    Embedder,
    SentenceTransformerEmbedder,
    resolve_model_path,
    vector_from_bytes,
    vector_to_bytes,
)
from streams.models.exceptions import ModelError, ModelMismatchError


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    """Load the bundled default model once for the module (loading takes seconds)."""
    return SentenceTransformerEmbedder()


def test_default_model_has_canonical_id_and_384_dimensions(
    embedder: SentenceTransformerEmbedder,
) -> None:
    assert embedder.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert embedder.dimension == 384
    assert isinstance(embedder, SentenceTransformerEmbedder)
    _: Embedder = embedder  # satisfies the Protocol


def test_embed_returns_unit_norm_float32_rows(embedder: SentenceTransformerEmbedder) -> None:
    vectors = embedder.embed(["first sentence", "a second, longer sentence", "third"])
    assert vectors.dtype == np.float32
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embed_of_nothing_is_an_empty_matrix(embedder: SentenceTransformerEmbedder) -> None:
    assert embedder.embed([]).shape == (0, 384)


def test_paraphrases_are_close_and_unrelated_text_is_not(
    embedder: SentenceTransformerEmbedder,
) -> None:
    a, b, c = embedder.embed(
        [
            "How do I reset my password?",
            "How can I reset my password?",
            "The weather in Lisbon is sunny and warm today.",
        ]
    )
    assert float(a @ b) > 0.8
    assert float(a @ c) < 0.5


def test_count_tokens_counts_model_tokens(embedder: SentenceTransformerEmbedder) -> None:
    assert 0 < embedder.count_tokens("hello world") <= 4
    # No truncation: a text longer than the model's window is counted in full.
    assert embedder.count_tokens("word " * 1000) >= 1000


def test_load_failure_is_a_retriable_model_error_naming_the_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=str(tmp_path)) as raised:
        SentenceTransformerEmbedder(str(tmp_path))
    assert raised.value.retriable


def test_resolve_model_path_finds_the_bundled_default() -> None:
    for name in (DEFAULT_EMBEDDING_MODEL, "sentence-transformers/all-MiniLM-L6-v2"):
        path = resolve_model_path(name)
        assert os.path.isfile(os.path.join(path, "modules.json"))


def test_resolve_model_path_passes_paths_and_other_names_through(tmp_path: Path) -> None:
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_model_path("org/some-other-model") == "org/some-other-model"


def test_vector_bytes_round_trip_little_endian_float32() -> None:
    vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    data = vector_to_bytes(vector)
    assert len(data) == 384 * 4
    assert data[:4] == vector[:1].astype("<f4").tobytes()
    decoded = vector_from_bytes(data, 384)
    assert decoded.dtype == np.float32
    assert decoded.flags.writeable
    np.testing.assert_array_equal(decoded, vector)


def test_wrong_length_bytes_raise_mismatch_naming_both_dimensions() -> None:
    data = vector_to_bytes(np.zeros(383, dtype=np.float32))
    with pytest.raises(
        ModelMismatchError, match=r"expected dimension 384.*dimension 383"
    ) as raised:
        vector_from_bytes(data, 384)
    assert not raised.value.retriable
