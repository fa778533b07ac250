"""The quality bar of the ONNX backends against torch fp32 (the sentence-transformers model).

On 2,000 texts of the kinds memstream stores (bench.embed_corpus): cosine to the torch
vectors with median >= 0.99 and minimum >= 0.98. On the paraphrase/look-alike pairs, the
near-duplicate decision at the configured threshold: the default (fp32) changes none; int8
changes none whose torch cosine is farther than ``BAND`` from the threshold (inside it,
int8 noise of up to ~0.01 in a pair's cosine tips a pair either way: 4 of 360 at the last
measurement, all within 0.0032, bench/RESULTS.md "Embedder backends"). In the normal suite;
``-m model_quality`` selects it alone, bench/embedder.py prints the full figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.embed_corpus import corpus, near_duplicate_pairs
from streams.common.settings import Settings
from streams.models.embedder import SentenceTransformerEmbedder
from streams.models.embedding_backends import DEFAULT_BACKEND
from streams.models.onnx_embedder import OnnxEmbedder
from streams.models.onnx_export import INT8_VARIANT

pytestmark = pytest.mark.model_quality

BAND = 0.01
VARIANTS = ["onnx-fp32", INT8_VARIANT]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus(2000)


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    return near_duplicate_pairs()


@pytest.fixture(scope="module")
def torch_vectors(
    torch_embedder: SentenceTransformerEmbedder, texts: list[str], pairs: list[tuple[str, str]]
) -> tuple[np.ndarray, np.ndarray]:
    """torch fp32's vectors of the corpus and its pairs' cosines, computed once."""
    return torch_embedder.embed(texts), _pair_cosines(torch_embedder, pairs)


def test_the_default_backend_is_fp32_onnx() -> None:
    assert Settings().embedding_backend == DEFAULT_BACKEND == "onnx"


@pytest.mark.parametrize("variant", VARIANTS)
def test_vectors_meet_the_cosine_bar_against_torch(
    variant: str, onnx_export_dir: Path, texts: list[str],
    torch_vectors: tuple[np.ndarray, np.ndarray],
) -> None:
    assert len(set(texts)) > 1500  # a corpus, not one sentence repeated
    embedder = OnnxEmbedder(onnx_export_dir, variant, threads=2)
    cos = np.sum(embedder.embed(texts) * torch_vectors[0], axis=1)
    worst = texts[int(np.argmin(cos))]
    print(f"{variant}: cosine to torch fp32 min {cos.min():.4f} median {np.median(cos):.4f}")
    assert np.median(cos) >= 0.99, f"median cosine {np.median(cos):.4f} < 0.99"
    assert cos.min() >= 0.98, f"min cosine {cos.min():.4f} < 0.98 on {worst[:80]!r}"
    if variant == "onnx-fp32":
        assert cos.min() >= 0.9999  # the same model, another runtime


@pytest.mark.parametrize("variant", VARIANTS)
def test_near_duplicate_decisions_match_torch(
    variant: str, onnx_export_dir: Path, pairs: list[tuple[str, str]],
    torch_vectors: tuple[np.ndarray, np.ndarray],
) -> None:
    threshold = Settings().near_duplicate_threshold
    want = torch_vectors[1]
    got = _pair_cosines(OnnxEmbedder(onnx_export_dir, variant, threads=2), pairs)
    merged = want >= threshold
    assert 0.3 < merged.mean() < 0.9  # the set straddles the threshold
    assert (np.abs(want - threshold) < BAND).sum() >= 5  # and has pairs right at it
    changed = np.nonzero((got >= threshold) != merged)[0]
    print(f"{variant}: decisions changed {len(changed)} of {len(pairs)}: "
          f"{[(pairs[i], round(float(want[i]), 4), round(float(got[i]), 4)) for i in changed]}")
    if variant == "onnx-fp32":
        assert len(changed) == 0
        return
    outside = [pairs[i] for i in changed if abs(want[i] - threshold) >= BAND]
    assert outside == []
    assert len(changed) <= 0.02 * len(pairs)


def _pair_cosines(embedder: object, pairs: list[tuple[str, str]]) -> np.ndarray:
    vectors = embedder.embed([t for p in pairs for t in p])  # type: ignore[attr-defined]
    return np.sum(vectors[0::2] * vectors[1::2], axis=1)
