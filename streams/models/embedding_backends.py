"""Which embedder a process loads: the backend setting, the model id it gives, the ONNX cache.

``torch`` is sentence-transformers as is; ``onnx`` and ``onnx-int8`` run an ONNX export of
the same model on onnxruntime + tokenizers (no torch). Each backend's vectors carry their own
model id (``<model>@onnx-int8-b64``, ``<model>@onnx-fp32``; torch keeps the plain id), so an
index never mixes vectors of two runtimes: switching backends is a model migration.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
from pathlib import Path

from streams.models.embedder import (
    SentenceTransformerEmbedder,
    canonical_model_id,
    resolve_model_path,
)
from streams.models.exceptions import ModelError
from streams.models.onnx_embedder import OnnxEmbedder
from streams.models.onnx_export import (
    EXPORT_FORMAT,
    INT8_VARIANT,
    OnnxManifest,
    export_onnx,
    is_exported,
)

logger = logging.getLogger(__name__)

BACKENDS = ("onnx", "onnx-int8", "torch")
# fp32 by measurement (bench/RESULTS.md, "Embedder backends"): the same vectors as torch
# (cosine 1.0000, no near-duplicate decision changed) at ~5.8 ms per query; int8 met the
# cosine bar and answers a query in ~3.8 ms, but changed 4 of 360 decisions near the
# threshold and was no faster batched on this machine.
DEFAULT_BACKEND = "onnx"
_VARIANTS = {"onnx-int8": INT8_VARIANT, "onnx": "onnx-fp32"}


class NoOnnxModelError(ModelError):
    """No ONNX export is at hand and this install cannot make one (no torch)."""

    retriable = False  # the same install fails the same way until the operator acts


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"embedding backend {backend!r}: one of {', '.join(BACKENDS)}")


def embedding_model_id(name_or_path: str, backend: str) -> str:
    """The model id stored with each vector that ``backend`` makes of ``name_or_path``,
    known without loading the model (the read service and rebuild-index need it first)."""
    _check_backend(backend)
    if backend == "torch":
        return canonical_model_id(name_or_path)
    folder = Path(name_or_path)
    source = (
        OnnxManifest.read(folder).source_model_id
        if is_exported(folder) else canonical_model_id(name_or_path)
    )
    return f"{source}@{_VARIANTS[backend]}"


def onnx_cache_folder(name_or_path: str, cache_dir: Path) -> Path:
    """Where the export of ``name_or_path`` is kept: named by its model id (readable part +
    hash) and the export format, so a changed export never reuses an old folder."""
    model_id = canonical_model_id(name_or_path)
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)[-60:].strip("_.") or "model"
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:12]
    return cache_dir / "onnx" / f"{readable}-{digest}-v{EXPORT_FORMAT}"


def onnx_model_folder(name_or_path: str, cache_dir: Path) -> Path:
    """An exported folder for ``name_or_path``: the path itself when it is one, else the
    cache's, exported there on first use (which needs torch)."""
    given = Path(name_or_path)
    if is_exported(given):
        return given
    cached = onnx_cache_folder(name_or_path, cache_dir)
    if is_exported(cached):
        return cached
    missing = [m for m in ("torch", "sentence_transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise NoOnnxModelError(
            f"in step 'embed', no ONNX export of {name_or_path!r} at {str(cached)!r} and "
            f"{', '.join(missing)} not installed to make one: run `memstream models "
            "export-onnx --out DIR` where the `torch` extra is installed and set "
            "MEMSTREAM_EMBEDDING_MODEL=DIR, or install memstream[torch] here"
        )
    logger.warning("no ONNX export of %s in %s yet: exporting it once (needs torch)",
                   name_or_path, cached)
    try:
        export_onnx(resolve_model_path(name_or_path), canonical_model_id(name_or_path), cached)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"in step 'embed', exporting {name_or_path!r} to ONNX in {str(cached)!r} failed: {exc}"
        ) from exc
    return cached


def load_embedder(
    name_or_path: str,
    backend: str,
    *,
    cache_dir: Path,
    batch_size: int = 64,
    threads: int | None = None,
) -> SentenceTransformerEmbedder | OnnxEmbedder:
    """The embedder ``backend`` gives for ``name_or_path`` (a ModelError when it cannot load)."""
    _check_backend(backend)
    if backend == "torch":
        return SentenceTransformerEmbedder(name_or_path, batch_size=batch_size)
    folder = onnx_model_folder(name_or_path, cache_dir)
    return OnnxEmbedder(folder, _VARIANTS[backend], batch_size=batch_size, threads=threads,
                        model_id=embedding_model_id(name_or_path, backend))
