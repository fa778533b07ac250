"""Embedder backends compared: torch fp32 vs ONNX fp32 vs ONNX int8 (two quantizations).

Quality: cosine of each backend's vectors to torch fp32's on ``bench.embed_corpus.corpus``,
and the near-duplicate decisions (cosine >= threshold) on its paraphrase/look-alike pairs:
how many change, how far those pairs sat from the threshold, and the threshold that would
change the fewest (a recalibration). Speed: sentences/s at batch 64 and 128, batch-1
latency p50/p99, each repeated (min/median/max), the backends interleaved so that load on
this shared machine hits them alike.

    PYTHONPATH=. python -m bench.embedder [--texts 2200] [--speed-texts 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.embed_corpus import corpus, near_duplicate_pairs
from streams.models.embedder import SentenceTransformerEmbedder, resolve_model_path
from streams.models.onnx_embedder import OnnxEmbedder
from streams.models.onnx_export import (
    INT8_VARIANT,
    OnnxManifest,
    export_onnx,
    quantize_per_channel_int8,
)

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PER_CHANNEL = "onnx-int8-pc"  # quantize_dynamic, per-channel weights: measured, not shipped


def build_backends(folder: Path, threads: int) -> dict[str, Any]:
    """torch plus the ONNX variants of one export (the per-channel one added here)."""
    fp32 = folder / "model.onnx"
    if not (folder / "model_int8_pc.onnx").exists():
        quantize_per_channel_int8(fp32, folder / "model_int8_pc.onnx")
    manifest = OnnxManifest.read(folder)
    manifest.variants[PER_CHANNEL] = "model_int8_pc.onnx"
    manifest.write(folder)
    backends: dict[str, Any] = {"torch": SentenceTransformerEmbedder(batch_size=64)}
    for variant in ("onnx-fp32", INT8_VARIANT, PER_CHANNEL):
        backends[variant] = OnnxEmbedder(folder, variant, threads=threads)
    return backends


def pair_cosines(vectors: np.ndarray) -> np.ndarray:
    """Cosine of rows 0-1, 2-3, ... (rows are unit-norm)."""
    return np.sum(vectors[0::2] * vectors[1::2], axis=1)


def quality(backends: dict[str, Any], texts: list[str], pairs: list[tuple[str, str]],
            threshold: float) -> dict[str, Any]:
    """Cosine to torch fp32 and near-duplicate decisions, per backend."""
    flat = [t for p in pairs for t in p]
    ref = backends["torch"].embed(texts)
    ref_pairs = pair_cosines(backends["torch"].embed(flat))
    ref_merge = ref_pairs >= threshold
    out: dict[str, Any] = {"pairs_merged_by_torch": int(ref_merge.sum()),
                           "pairs_within_0.01_of_threshold":
                               int((np.abs(ref_pairs - threshold) < 0.01).sum())}
    for name, embedder in backends.items():
        if name == "torch":
            continue
        cos = np.sum(embedder.embed(texts) * ref, axis=1)
        got = pair_cosines(embedder.embed(flat))
        changed = np.nonzero((got >= threshold) != ref_merge)[0]
        candidates = np.round(np.arange(threshold - 0.03, threshold + 0.0301, 0.001), 3)
        flips = {float(t): int(((got >= t) != ref_merge).sum()) for t in candidates}
        best = min(flips, key=lambda t: (flips[t], abs(t - threshold)))
        out[name] = {
            "cos_min": float(cos.min()), "cos_p1": float(np.percentile(cos, 1)),
            "cos_median": float(np.median(cos)),
            "pair_cos_abs_diff_max": float(np.abs(got - ref_pairs).max()),
            "decisions_changed": len(changed),
            "changed_torch_distance_to_threshold_max":
                float(np.abs(ref_pairs[changed] - threshold).max()) if len(changed) else 0.0,
            "changed_examples": [(pairs[i][0], pairs[i][1], round(float(ref_pairs[i]), 4),
                                  round(float(got[i]), 4)) for i in changed[:4]],
            "best_threshold": best, "decisions_changed_at_best": flips[best],
        }
    return out


def speed(backends: dict[str, Any], texts: list[str], repeats: int) -> dict[str, Any]:
    """sentences/s at batch 64 and 128, batch-1 latency; backends interleaved per repeat."""
    runs: dict[str, dict[str, list[float]]] = {n: {} for n in backends}
    singles = texts[:100]
    for embedder in backends.values():  # warm-up: first-call allocations
        embedder.embed(texts[:64])
    for _ in range(repeats):
        for name, embedder in backends.items():
            for batch in (64, 128):
                embedder.batch_size = batch
                started = time.perf_counter()
                for i in range(0, len(texts), batch):
                    embedder.embed(texts[i : i + batch])
                rate = len(texts) / (time.perf_counter() - started)
                runs[name].setdefault(f"b{batch}_per_s", []).append(rate)
                print(f"{name} batch {batch}: {rate:.0f}/s", file=sys.stderr, flush=True)
            embedder.batch_size = 64
            latencies = []
            for text in singles:
                started = time.perf_counter()
                embedder.embed([text])
                latencies.append((time.perf_counter() - started) * 1000)
            runs[name].setdefault("b1_p50_ms", []).append(float(np.percentile(latencies, 50)))
            runs[name].setdefault("b1_p99_ms", []).append(float(np.percentile(latencies, 99)))
    return {name: {k: [min(v), statistics.median(v), max(v)] for k, v in r.items()}
            for name, r in runs.items()}


def main() -> None:
    """Run the comparison and print one JSON document."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=2200)
    parser.add_argument("--pairs", type=int, default=360)
    parser.add_argument("--speed-texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--export", type=Path, help="an existing export folder (else a temp one)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--short-only", action="store_true",
                        help="speed on texts under 400 characters (no 256-token texts)")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, check=False).stdout.strip(),
        "loadavg_start": os.getloadavg(), "cpus": os.cpu_count(), "threads": args.threads,
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-embedder-"))
    try:
        folder = args.export
        if folder is None:
            folder = tmp / "export"
            export_onnx(resolve_model_path(MODEL), MODEL, folder)
        else:
            folder = Path(shutil.copytree(folder, tmp / "export"))
        backends = build_backends(folder, args.threads)
        if not args.skip_quality:
            result["quality"] = quality(backends, corpus(args.texts),
                                        near_duplicate_pairs(args.pairs), args.threshold)
            print(json.dumps(result["quality"], indent=1), flush=True)
        if not args.skip_speed:
            texts = corpus(args.speed_texts * 2, seed=99)
            if args.short_only:
                texts = [t for t in texts if len(t) < 400]
            result["speed_texts"] = len(texts[: args.speed_texts])
            result["speed"] = speed(backends, texts[: args.speed_texts], args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["loadavg_end"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
