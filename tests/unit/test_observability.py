"""The metrics the deployment's alerts need: state-dir disk use and embedding errors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.memorize import MemorizeAgent
from streams.observability import StateDirCollector, WorkerMetrics, directory_bytes
from streams.processing.runtime import InputRecord


def _samples(collector: StateDirCollector) -> dict[str, tuple[dict[str, str], float]]:
    return {f.name: (f.samples[0].labels, f.samples[0].value) for f in collector.collect()}


def test_state_dir_bytes_counts_the_files_below_it(tmp_path: Path) -> None:
    (tmp_path / "store" / "0").mkdir(parents=True)
    (tmp_path / "store" / "0" / "000001.sst").write_bytes(b"x" * 1000)
    (tmp_path / "CURRENT").write_bytes(b"y" * 24)
    samples = _samples(StateDirCollector("worker", tmp_path))
    assert samples["memstream_state_dir_bytes"] == ({"dir": "worker"}, 1024.0)
    free = samples["memstream_state_fs_free_bytes"][1]
    size = samples["memstream_state_fs_size_bytes"][1]
    assert 0 < free <= size


def test_a_state_dir_not_created_yet_is_empty_on_its_parents_filesystem(tmp_path: Path) -> None:
    samples = _samples(StateDirCollector("serve", tmp_path / "not" / "yet"))
    assert samples["memstream_state_dir_bytes"] == ({"dir": "serve"}, 0.0)
    assert samples["memstream_state_fs_size_bytes"][1] > 0
    assert directory_bytes(tmp_path / "missing") == 0


class _FailingEmbedder:
    model_id = "test/failing"
    dimension = 4

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise RuntimeError("CUDA out of memory")


class _EmptyStore:
    def get(self, key: str) -> Any:
        return None


class _Context:
    def store(self, name: str, partition: int) -> _EmptyStore:
        return _EmptyStore()


def test_an_embedding_failure_is_counted_and_raised() -> None:
    metrics = WorkerMetrics()
    agent = MemorizeAgent(_FailingEmbedder(), threshold=0.9, max_text_chars=100,
                          embed_batch_size=8, metrics=metrics)
    record = InputRecord("scored.v1", 0, 7, None, None,
                         {"tenant": "acme", "content_hash": "h1", "text": "rotate the keys"})
    with pytest.raises(RuntimeError, match="out of memory"):
        agent._embed_unseen([record], {}, _Context())  # type: ignore[arg-type]
    assert metrics.registry.get_sample_value("memstream_embed_errors_total") == 1.0
    assert metrics.registry.get_sample_value("memstream_embed_seconds_count") == 0.0
