"""An ``Embedder`` on onnxruntime + tokenizers: no torch at run time.

It loads a folder written by ``streams.models.onnx_export`` and computes what the
sentence-transformers model does: tokenize (truncated to the model's ``max_seq_length``),
run the transformer, pool as the model's Pooling config says (mean over the attention mask
for all-MiniLM-L6-v2), L2-normalize when the model has a Normalize module.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streams.models.exceptions import ModelError
from streams.models.onnx_export import INT8_VARIANT, OnnxManifest

logger = logging.getLogger(__name__)


# Padded tokens per model call at most (rows x longest row); see OnnxEmbedder._sub_batches.
MAX_BATCH_TOKENS = 2048


def default_threads() -> int:
    """Intra-op threads: the cores, at most 4 (a MiniLM batch gains little past that)."""
    return max(1, min(4, os.cpu_count() or 1))


class OnnxEmbedder:
    """An ``Embedder`` over one variant (``onnx-fp32`` or ``onnx-int8-b64``) of an export."""

    def __init__(
        self,
        folder: str | Path,
        variant: str = INT8_VARIANT,
        *,
        batch_size: int = 64,
        threads: int | None = None,
        model_id: str | None = None,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        memory_arena: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        started = time.perf_counter()
        folder = Path(folder)
        manifest = OnnxManifest.read(folder)
        if variant not in manifest.variants:
            raise ModelError(
                f"in step 'embed', ONNX export {str(folder)!r} has no variant {variant!r} "
                f"(it has {sorted(manifest.variants)})"
            )
        self.manifest = manifest
        self.variant = variant
        self.model_id = model_id or f"{manifest.source_model_id}@{variant}"
        self.dimension = manifest.dimension
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.threads = threads or default_threads()
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.enable_cpu_mem_arena = memory_arena
            # No busy-waiting between runs: the worker shares its cores with the stream
            # runtime and whisper, and the read service with its HTTP loop.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session: Any = ort.InferenceSession(
                str(folder / manifest.variants[variant]), options,
                providers=["CPUExecutionProvider"],
            )
            self._tokenizer: Any = Tokenizer.from_file(str(folder / "tokenizer.json"))
            # Counting uses its own instance without truncation or padding: one instance's
            # settings would otherwise race between an embedding and a count.
            self._count_tokenizer: Any = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except ImportError as exc:
            raise ModelError(
                f"in step 'embed', {exc.name or exc} is not installed: the ONNX embedder "
                "needs onnxruntime and tokenizers (the `worker` or `serve` extra)"
            ) from exc
        except Exception as exc:
            raise ModelError(
                f"in step 'embed', loading ONNX model {self.model_id!r} from "
                f"{str(folder)!r} failed: {exc}"
            ) from exc
        self._count_tokenizer.no_truncation()
        self._count_tokenizer.no_padding()
        self._tokenizer.no_padding()  # each batch is padded to its own longest text below
        self._tokenizer.enable_truncation(max_length=manifest.max_seq_length)
        self._pad_id = int(self._tokenizer.token_to_id("[PAD]") or 0)
        self._inputs = manifest.inputs
        logger.info(
            "loaded embedding model %s (dimension %s, %s threads) from %s in %.2fs",
            self.model_id, self.dimension, self.threads, folder, time.perf_counter() - started,
        )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return unit-norm float32 embeddings, one row per text; blocking, run it off the loop."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if len(texts) == 0:
            return out
        try:
            if self.manifest.do_lower_case:
                texts = [t.lower() for t in texts]
            encodings = self._tokenizer.encode_batch(list(texts))
            for rows in self._sub_batches([len(e.ids) for e in encodings]):
                out[rows] = self._run([encodings[i] for i in rows])
        except Exception as exc:
            raise ModelError(
                f"in step 'embed', model {self.model_id!r} failed on a batch of {len(texts)}: {exc}"
            ) from exc
        return out

    def _sub_batches(self, lengths: list[int]) -> list[list[int]]:
        """Rows longest first (batches of like lengths pad less), each batch at most
        ``batch_size`` rows and ``max_batch_tokens`` tokens once padded: one 256-token text
        would otherwise pad 63 short ones to 256 and cost as much as 64 long texts."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        rows: list[int] = []
        for i in order:
            width = lengths[rows[0]] if rows else lengths[i]
            if rows and (len(rows) == self.batch_size
                         or (len(rows) + 1) * width > self.max_batch_tokens):
                batches.append(rows)
                rows = []
            rows.append(i)
        if rows:
            batches.append(rows)
        return batches

    def _run(self, encodings: list[Any]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            mask[row, :n] = 1
            types[row, :n] = e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        tokens = self._session.run(None, {k: feeds[k] for k in self._inputs})[0]
        vectors = pool(tokens, mask, self.manifest.pooling)
        if self.manifest.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)  # as torch.nn.functional.normalize
        return vectors.astype(np.float32, copy=False)

    def count_tokens(self, text: str) -> int:
        """Return how many model tokens ``text`` takes, without special tokens or truncation."""
        return len(self._count_tokenizer.encode(text, add_special_tokens=False).ids)


def pool(tokens: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """Sentence vectors from token vectors (batch, sequence, dim), as sentence-transformers
    pools: mean over unmasked tokens (sum / max(count, 1e-9)), the first token, or the max
    over unmasked tokens."""
    if mode == "cls":
        return tokens[:, 0]
    weights = mask[:, :, None].astype(tokens.dtype)
    if mode == "mean":
        return (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    if mode == "max":
        return np.where(weights > 0, tokens, -1e9).max(axis=1)
    raise ModelError(f"in step 'embed', pooling {mode!r}: one of cls/mean/max supported")
