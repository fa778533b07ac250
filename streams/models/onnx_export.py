"""Export a sentence-transformers model to ONNX (fp32 + per-channel int8), once, with torch.

The worker and the read service load the exported folder with onnxruntime + tokenizers
only (``streams.models.onnx_embedder``); torch is needed here and nowhere else. The folder
holds both graphs, the tokenizer and a manifest (``memstream-onnx.json``) naming the source
model, the pooling and the export settings, which are part of the vectors' model id.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streams.models.exceptions import ModelError

logger = logging.getLogger(__name__)

MANIFEST = "memstream-onnx.json"
# Bump when anything below changes what the graphs compute: it names the cache folder, so a
# new export never reuses an old one.
EXPORT_FORMAT = 1
OPSET = 17
FP32_FILE = "model.onnx"
# int8 weights in blocks of 64 along the input dimension (MatMulNBits), multiplied in int8
# with the activations quantized per row and block too (accuracy_level 4). Measured against
# quantize_dynamic's per-channel int8, whose activations share one scale per tensor: min
# cosine 0.996 vs 0.94 on short texts (bench/RESULTS.md, "Embedder backends").
INT8_BLOCK = 64
INT8_FILE = f"model_int8_b{INT8_BLOCK}.onnx"
INT8_VARIANT = f"onnx-int8-b{INT8_BLOCK}"
# The variants as they appear in model ids ("<source>@onnx-int8-b64"), and their files.
VARIANT_FILES = {"onnx-fp32": FP32_FILE, INT8_VARIANT: INT8_FILE}


@dataclass(frozen=True)
class OnnxManifest:
    """What an exported folder holds and how its outputs become sentence vectors."""

    source_model_id: str
    dimension: int
    max_seq_length: int
    pooling: str  # "mean", "cls" or "max" (sentence-transformers' Pooling config)
    normalize: bool
    do_lower_case: bool
    inputs: tuple[str, ...]
    variants: dict[str, str]
    export_format: int = EXPORT_FORMAT
    opset: int = OPSET
    int8_block: int = INT8_BLOCK

    def write(self, folder: Path) -> None:
        """Write the manifest into ``folder``."""
        (folder / MANIFEST).write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> OnnxManifest:
        """The manifest of an exported folder (ModelError when absent or unreadable)."""
        path = folder / MANIFEST
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            raw["inputs"] = tuple(raw["inputs"])
            return cls(**raw)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ModelError(f"in step 'embed', ONNX manifest {str(path)!r}: {exc}") from exc


def is_exported(folder: Path) -> bool:
    """True when ``folder`` holds an export (its manifest is written last)."""
    return (folder / MANIFEST).is_file()


def _pooling_mode(config: dict[str, Any]) -> str:
    """cls, mean or max from a Pooling config (sentence-transformers 6 names the mode;
    earlier versions set one ``pooling_mode_*`` flag)."""
    named = config.get("pooling_mode")
    if isinstance(named, str):
        if named not in ("cls", "mean", "max"):
            raise ModelError(f"in step 'export-onnx', pooling {named!r}: cls/mean/max supported")
        return named
    modes = [m for m in ("cls", "mean", "max") if config.get(f"pooling_mode_{m}_token")
             or config.get(f"pooling_mode_{m}_tokens")]
    if len(modes) != 1 or any(config.get(k) for k in ("pooling_mode_mean_sqrt_len_tokens",
                                                       "pooling_mode_weightedmean_tokens",
                                                       "pooling_mode_lasttoken")):
        raise ModelError(f"in step 'export-onnx', pooling {config}: one of cls/mean/max supported")
    return modes[0]


def export_onnx(
    model_path: str, source_model_id: str, out: Path, *, replace: bool = False
) -> OnnxManifest:
    """Export the sentence-transformers model at ``model_path`` into ``out`` (created; an
    export already there is kept and returned unless ``replace``). Needs torch and onnx."""
    try:
        import torch  # optional: torch
        from sentence_transformers import SentenceTransformer  # optional: torch
    except ImportError as exc:
        raise ModelError(
            f"in step 'export-onnx', {exc.name or exc} is not installed: exporting needs the "
            "`torch` extra (pip install 'memstream[torch]')"
        ) from exc
    if is_exported(out) and not replace:
        logger.info("%s already holds an ONNX export: kept (--replace redoes it)", out)
        return OnnxManifest.read(out)
    if out.is_dir() and any(out.iterdir()) and not is_exported(out):
        raise ModelError(f"in step 'export-onnx', --out {str(out)!r} exists and is not an "
                         "ONNX export: give an empty or new folder")
    started = time.perf_counter()
    st: Any = SentenceTransformer(model_path, device="cpu")
    transformer, pooling_module = st[0], st[1]
    hf_model = transformer.auto_model.eval()
    tokenizer = transformer.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"in step 'export-onnx', {model_path!r}: a fast tokenizer is needed")
    # sentence-transformers 6 renamed get_sentence_embedding_dimension; >=3 is supported.
    dimension = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    normalize = any(type(m).__name__ == "Normalize" for m in st)
    sample = tokenizer(["a short sample", "another one, a little longer"], padding=True,
                       return_tensors="pt")
    inputs = tuple(k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample)

    class _TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = hf_model

        def forward(self, *args: Any) -> Any:
            return self.model(**dict(zip(inputs, args, strict=True))).last_hidden_state

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from another user (an image)
    try:
        axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
        axes["token_embeddings"] = {0: "batch", 1: "sequence"}
        with torch.no_grad():
            torch.onnx.export(
                _TokenEmbeddings(), tuple(sample[k] for k in inputs), str(staging / FP32_FILE),
                input_names=list(inputs), output_names=["token_embeddings"],
                dynamic_axes=axes, opset_version=OPSET, dynamo=False,
            )
        quantize_blockwise_int8(staging / FP32_FILE, staging / INT8_FILE)
        tokenizer.backend_tokenizer.save(str(staging / "tokenizer.json"))
        manifest = OnnxManifest(
            source_model_id=source_model_id,
            dimension=int(dimension()),
            max_seq_length=int(transformer.max_seq_length),
            pooling=_pooling_mode(pooling_module.get_config_dict()),
            normalize=normalize,
            do_lower_case=bool(getattr(transformer, "do_lower_case", False)),
            inputs=inputs,
            variants=dict(VARIANT_FILES),
        )
        manifest.write(staging)  # last: a folder with a manifest is complete
        _replace(staging, out, replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("exported %s to ONNX in %s (%.1fs)", source_model_id, out,
                time.perf_counter() - started)
    return manifest


def quantize_blockwise_int8(fp32: Path, out: Path, block: int = INT8_BLOCK) -> None:
    """Write ``fp32``'s MatMuls as MatMulNBits: symmetric int8 weights per block of
    ``block`` inputs, int8 compute (accuracy_level 4)."""
    import onnx  # optional: torch
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(fp32)), bits=8, block_size=block, is_symmetric=True, accuracy_level=4
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(out), False)


def quantize_per_channel_int8(fp32: Path, out: Path) -> None:
    """quantize_dynamic's per-channel int8 of the MatMuls (activations: one scale per tensor);
    measured against the default in bench/embedder.py, not used by memstream."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"])


def _replace(staging: Path, out: Path, replace: bool) -> None:
    """Move the finished export to ``out``. An export already there is kept (another process
    finished first) unless ``replace``; anything else there is never deleted."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        try:
            os.rename(staging, out)
        except OSError:
            if not out.exists():
                raise
        else:
            return
    if not is_exported(out):
        raise ModelError(f"in step 'export-onnx', --out {str(out)!r} exists and is not an "
                         "ONNX export: give an empty or new folder")
    if not replace:
        shutil.rmtree(staging, ignore_errors=True)
        return
    old = out.with_name(f".{out.name}-old-{os.getpid()}")
    os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)
