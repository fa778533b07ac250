"""The metrics the deployment's alerts need: state-dir disk use and embedding errors."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.memorize import MemorizeAgent
from streams.common.observability import StateDirCollector, WorkerMetrics, directory_bytes
from streams.processing.api import InputRecord


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


def _registry_stub() -> tuple[Any, int]:
    """A local HTTP server answering every GET with ``[]`` (a registry with no subjects)."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@pytest.mark.parametrize("json_lines", [True, False])
def test_registry_client_requests_are_not_logged_and_urls_are_redacted(
    capsys: pytest.CaptureFixture[str], json_lines: bool
) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from streams.common.logs import configure_logging

    server, port = _registry_stub()
    try:
        configure_logging("INFO", json_lines=json_lines)
        client = SchemaRegistryClient({"url": f"http://127.0.0.1:{port}"})
        assert client.get_subjects() == []
        logging.getLogger("memstream.test").info(
            "registry at %s", "http://reader:Zk4Wq8Pm2@registry:8081/apis")
    finally:
        server.shutdown()
        logging.getLogger().handlers[:] = []
    err = capsys.readouterr().err
    assert "HTTP Request" not in err and f"127.0.0.1:{port}" not in err, err
    assert "Zk4Wq8Pm2" not in err and "http://***@registry:8081/apis" in err
