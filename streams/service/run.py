"""``memstream serve``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from streams.common.settings import Settings
from streams.models.embedding_backends import embedding_model_id
from streams.models.exceptions import ModelError

if TYPE_CHECKING:
    from streams.service.core import MissingModel, QueryEmbedder

logger = logging.getLogger(__name__)


def serve(settings: Settings) -> None:
    """Load the model and the snapshot, catch up, and serve HTTP until SIGTERM/SIGINT."""
    import uvicorn

    from streams.service.core import ReadService
    from streams.service.http import create_app
    from streams.service.server import server_config

    single_threaded_blas()
    service = ReadService.build(settings, load_query_model(settings))
    service.start()
    app = create_app(service)
    logger.info("serving on http://%s:%d (model %s%s)", settings.serve_host, settings.serve_port,
                service.embedder.model_id, " NOT LOADED" if service.model_error else "")
    try:
        uvicorn.Server(server_config(app, settings)).run()
    finally:
        service.close()


def load_query_model(settings: Settings) -> QueryEmbedder | MissingModel:
    """The embedding model, or a stand-in saying why it did not load.

    A model that does not load (a wrong path, a missing download) leaves the service live but
    not ready: /readyz names the model and the error, recall and context answer 503, and an
    orchestrator sees why instead of a process restarting in a loop."""
    from streams.models.embedding_backends import load_embedder
    from streams.service.core import MissingModel

    name, backend = settings.embedding_model, settings.embedding_backend
    try:
        return load_embedder(name, backend, cache_dir=settings.cache_dir, batch_size=1,
                             threads=settings.embedding_threads or None)
    except ModelError as exc:
        logger.exception("embedding model %s did not load: serving without it, not ready", name)
        try:
            model_id = embedding_model_id(name, backend)
        except ModelError:
            model_id = name  # an unreadable export: its snapshots cannot be named either
        return MissingModel(name, model_id, exc)


def single_threaded_blas() -> None:
    """One BLAS thread for the exact search's matrix-vector product.

    With torch's thread pool in the same process, a multi-threaded OpenBLAS sgemv waits on
    busy cores: exact search at 10k memories went from 0.4 ms to 8 ms p50 once the model had
    run (bench/RESULTS.md). One thread does the product in ~0.5 ms per 10k rows."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
