"""The ONNX embedder on the real bundled all-MiniLM-L6-v2 export: same vectors as the
sentence-transformers model (fp32), its own model ids, loading without torch."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from streams.models import embedding_backends
from streams.models.embedder import Embedder, SentenceTransformerEmbedder
from streams.models.embedding_backends import (
    NoOnnxModelError,
    embedding_model_id,
    load_embedder,
    onnx_cache_folder,
    onnx_model_folder,
)
from streams.models.exceptions import ModelError
from streams.models.onnx_embedder import OnnxEmbedder
from streams.models.onnx_export import MANIFEST, export_onnx

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LONG = " ".join(f"step {i}: restart the payments worker and check the ledger" for i in range(80))
HOSTILE = ["", "   ", "\x00\x01\x02", "👍🏽" * 50, "ß" * 3000, "<script>alert(1)</script>",
           "DROP TABLE memories; --", "\u202e reversed \u202c", LONG]


@pytest.fixture(scope="module")
def fp32(onnx_export_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(onnx_export_dir, "onnx-fp32", threads=2)


@pytest.fixture(scope="module")
def int8(onnx_export_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(onnx_export_dir, threads=2)


def test_fp32_export_reproduces_sentence_transformers(
    fp32: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    # Mixed lengths in one batch (padding), a text past 256 tokens (truncation), odd input.
    texts = ["ok", "How do I reset my password?", LONG, *HOSTILE,
             "Deploy api-gateway 2.3.1 to staging at 14:00 on Friday"]
    got, want = fp32.embed(texts), torch_embedder.embed(texts)
    assert got.dtype == np.float32 and got.shape == (len(texts), 384)
    np.testing.assert_allclose(np.sum(got * want, axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_rows_do_not_depend_on_batch_order_or_size(fp32: OnnxEmbedder) -> None:
    texts = [f"memory {i}: " + "word " * (i * 7 % 40) for i in range(20)] + [LONG]
    fp32.batch_size = 4
    try:
        batched = fp32.embed(texts)
    finally:
        fp32.batch_size = 64
    single = np.stack([fp32.embed([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    reversed_rows = fp32.embed(texts[::-1])[::-1]
    np.testing.assert_allclose(reversed_rows, single, atol=1e-5)


def test_hostile_text_gives_unit_norm_rows(int8: OnnxEmbedder) -> None:
    vectors = int8.embed(HOSTILE)
    assert vectors.shape == (len(HOSTILE), 384)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert int8.embed([]).shape == (0, 384)


def test_model_ids_name_runtime_and_quantization(
    fp32: OnnxEmbedder, int8: OnnxEmbedder, onnx_export_dir: Path
) -> None:
    assert int8.model_id == f"{MODEL}@onnx-int8-b64"
    assert fp32.model_id == f"{MODEL}@onnx-fp32"
    _: Embedder = int8
    ids = {embedding_model_id("all-MiniLM-L6-v2", b) for b in ("onnx-int8", "onnx", "torch")}
    assert ids == {int8.model_id, fp32.model_id, MODEL}
    # An exported folder given as the model is named by the model it was exported from.
    assert embedding_model_id(str(onnx_export_dir), "onnx-int8") == int8.model_id
    with pytest.raises(ValueError, match="onnx, onnx-int8, torch"):
        embedding_model_id("all-MiniLM-L6-v2", "tensorflow")


def test_count_tokens_matches_the_torch_tokenizer(
    int8: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    for text in ["hello world", LONG * 3, "", "ünïcödé 👍"]:
        assert int8.count_tokens(text) == torch_embedder.count_tokens(text)
    assert int8.count_tokens(LONG * 3) > 256  # counting never truncates


def test_embedding_and_counting_from_threads_at_once(int8: OnnxEmbedder) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                int8.embed([f"text {i}", LONG])
                int8.count_tokens(LONG)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_first_use_exports_into_the_cache_once(onnx_cache_dir: Path) -> None:
    folder = onnx_model_folder("all-MiniLM-L6-v2", onnx_cache_dir)
    assert folder == onnx_cache_folder("all-MiniLM-L6-v2", onnx_cache_dir)
    assert folder.parent.parent == onnx_cache_dir
    stamp = (folder / MANIFEST).stat().st_mtime_ns
    embedder = load_embedder("all-MiniLM-L6-v2", "onnx-int8", cache_dir=onnx_cache_dir)
    assert (folder / MANIFEST).stat().st_mtime_ns == stamp  # reused, not exported again
    assert embedder.model_id == f"{MODEL}@onnx-int8-b64"


def test_an_exported_folder_loads_without_torch(
    onnx_export_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This environment has torch; the loader is made to see none (what the image has).
    real = importlib.util.find_spec
    monkeypatch.setattr(
        embedding_backends.importlib.util, "find_spec",
        lambda name, *a: None if name in ("torch", "sentence_transformers") else real(name, *a),
    )
    embedder = load_embedder(str(onnx_export_dir), "onnx-int8", cache_dir=tmp_path)
    assert embedder.model_id == f"{MODEL}@onnx-int8-b64"
    assert not (tmp_path / "onnx").exists()
    with pytest.raises(NoOnnxModelError, match="memstream models export-onnx") as raised:
        load_embedder("all-MiniLM-L6-v2", "onnx-int8", cache_dir=tmp_path)
    assert not raised.value.retriable
    assert "torch" in str(raised.value) and str(tmp_path) in str(raised.value)


def test_a_broken_export_is_a_model_error_naming_the_folder(
    onnx_export_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match=str(tmp_path)):
        OnnxEmbedder(tmp_path)
    (tmp_path / MANIFEST).write_text((onnx_export_dir / MANIFEST).read_text(), encoding="utf-8")
    with pytest.raises(ModelError, match="loading ONNX model") as raised:
        OnnxEmbedder(tmp_path)  # a manifest without its graph
    assert raised.value.retriable
    with pytest.raises(ModelError, match="no variant 'onnx-int4'"):
        OnnxEmbedder(onnx_export_dir, "onnx-int4")


def test_export_never_overwrites_a_folder_that_is_not_an_export(tmp_path: Path) -> None:
    keep = tmp_path / "notes.txt"
    keep.write_text("mine", encoding="utf-8")
    from streams.models.embedder import resolve_model_path

    with pytest.raises(ModelError, match="is not an ONNX export"):
        export_onnx(resolve_model_path("all-MiniLM-L6-v2"), MODEL, tmp_path)
    assert keep.read_text(encoding="utf-8") == "mine"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # the staging folder is gone too


def test_the_read_service_without_a_loadable_model_names_the_backend_id(
    settings_factory, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    from streams.service.core import MissingModel
    from streams.service.run import load_query_model

    settings = settings_factory(embedding_model=str(tmp_path / "no-such-model"),
                                cache_dir=tmp_path / "cache")
    missing = load_query_model(settings)
    assert isinstance(missing, MissingModel)
    assert missing.model_id == f"{tmp_path / 'no-such-model'}@onnx-fp32"  # the default backend
    assert "no-such-model" in missing.detail


def test_cli_export_names_the_folder_and_the_setting(
    onnx_export_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from streams.ops.cli import app

    runner = CliRunner()
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine", encoding="utf-8")
    refused = runner.invoke(app, ["models", "export-onnx", "--out", str(keep)])
    assert isinstance(refused.exception, ModelError)
    assert "is not an ONNX export" in str(refused.exception)
    # An export already there is kept (no work) and reported with the setting to use.
    again = runner.invoke(app, ["models", "export-onnx", "--out", str(onnx_export_dir)])
    assert again.exit_code == 0, again.output
    assert f"MEMSTREAM_EMBEDDING_MODEL={onnx_export_dir}" in again.output


def test_the_read_service_shares_only_the_onnx_embedder_without_a_lock(
    int8: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    from streams.service.core import shared

    assert shared(int8) is int8  # safe from threads at once (the test above)
    locked = shared(torch_embedder)
    assert locked is not torch_embedder
    assert np.allclose(locked.embed(["hello"]), torch_embedder.embed(["hello"]))
