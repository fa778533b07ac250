"""The bundled model's ONNX export, made once per test session through the first-use path."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.models.embedder import SentenceTransformerEmbedder
from streams.models.embedding_backends import onnx_model_folder


@pytest.fixture(scope="session")
def onnx_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding the default model's export (exported here, needs torch)."""
    cache = tmp_path_factory.mktemp("cache")
    onnx_model_folder("all-MiniLM-L6-v2", cache)
    return cache


@pytest.fixture(scope="session")
def onnx_export_dir(onnx_cache_dir: Path) -> Path:
    """The exported folder of the default model."""
    return onnx_model_folder("all-MiniLM-L6-v2", onnx_cache_dir)


@pytest.fixture(scope="session")
def torch_embedder() -> SentenceTransformerEmbedder:
    """The torch fp32 reference, loaded once per session."""
    return SentenceTransformerEmbedder()
