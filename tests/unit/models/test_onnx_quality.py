"""The quality bar of the default backend (ONNX, int8 weights) against torch fp32.

On 2,000 texts of the kinds memstream stores (bench.embed_corpus): cosine to the torch
vectors with median >= 0.99 and minimum >= 0.98; on the paraphrase/look-alike pairs, the
near-duplicate decision at the configured threshold unchanged for every pair whose torch
cosine is not within ``BAND`` of the threshold. Inside the band int8 noise (pair cosines
move by up to ~0.01) can tip a pair either way, as any change of runtime can; how many did
is printed and recorded in bench/RESULTS.md ("Embedder backends"). Runs in the normal
suite (`-m model_quality` selects it alone); bench/embedder.py prints the full figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.models.embedder import SentenceTransformerEmbedder
from agents.models.onnx_embedder import OnnxEmbedder
from bench.embed_corpus import corpus, near_duplicate_pairs
from streams.settings import Settings

pytestmark = pytest.mark.model_quality

BAND = 0.01


@pytest.fixture(scope="module")
def int8(onnx_export_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(onnx_export_dir, threads=2)


def test_int8_vectors_meet_the_cosine_bar_against_torch(
    int8: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    texts = corpus(2000)
    assert len(set(texts)) > 1500  # a corpus, not one sentence repeated
    cos = np.sum(int8.embed(texts) * torch_embedder.embed(texts), axis=1)
    worst = texts[int(np.argmin(cos))]
    print(f"cosine to torch fp32: min {cos.min():.4f} median {np.median(cos):.4f}")
    assert np.median(cos) >= 0.99, f"median cosine {np.median(cos):.4f} < 0.99"
    assert cos.min() >= 0.98, f"min cosine {cos.min():.4f} < 0.98 on {worst[:80]!r}"


def test_int8_keeps_near_duplicate_decisions_outside_the_noise_band(
    int8: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    threshold = Settings().near_duplicate_threshold
    pairs = near_duplicate_pairs()
    flat = [t for p in pairs for t in p]
    want = _pair_cosines(torch_embedder.embed(flat))
    got = _pair_cosines(int8.embed(flat))
    merged = want >= threshold
    assert 0.3 < merged.mean() < 0.9  # the set straddles the threshold
    changed = np.nonzero((got >= threshold) != merged)[0]
    outside = [(pairs[i], float(want[i]), float(got[i])) for i in changed
               if abs(want[i] - threshold) >= BAND]
    print(f"decisions changed: {len(changed)} of {len(pairs)}, all within {BAND} of "
          f"{threshold}: {not outside}; pairs within the band: "
          f"{int((np.abs(want - threshold) < BAND).sum())}")
    assert outside == []
    assert len(changed) <= 0.02 * len(pairs)


def _pair_cosines(vectors: np.ndarray) -> np.ndarray:
    return np.sum(vectors[0::2] * vectors[1::2], axis=1)
