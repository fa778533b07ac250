"""``memstream worker``: build the selected agents and run them exactly-once."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaException

from streams.common.admin import ensure_changelog_topics, ensure_topics
from streams.common.heap import batch_collector
from streams.common.observability import StateDirCollector, WorkerMetrics
from streams.common.settings import Settings
from streams.processing.api import Agent
from streams.processing.runtime import Runtime
from streams.processing.watchdog import Liveness, Watchdog

logger = logging.getLogger(__name__)

# In flow order: a voice note's transcript is scored and memorized in the same worker.
AGENT_NAMES = ("transcribe", "score", "memorize", "summarize")


def one_blas_thread() -> None:
    """Run OpenBLAS on the calling process's one thread. memorize searches one vector at a
    time (a matrix × vector product in numpy); OpenBLAS's second thread saves nothing there
    and then spins for a while after every call: the score+dedupe path cost 424–432 µs of CPU
    per event with it and 252–324 without (bench.peers, load 2.6–3.9). The embedder runs on
    onnxruntime's (or torch's) own threads, untouched."""
    from threadpoolctl import ThreadpoolController

    ThreadpoolController().select(internal_api="openblas").limit(limits=1)


def build_agents(settings: Settings, names: Sequence[str], metrics: WorkerMetrics) -> list[Agent]:
    """The agents named (models are loaded once here, per worker process)."""
    unknown = sorted(set(names) - set(AGENT_NAMES))
    if unknown:
        raise ValueError(f"unknown agents {unknown}; known: {', '.join(AGENT_NAMES)}")
    agents: list[Agent] = []
    if "transcribe" in names:
        from agents.transcribe import TranscribeAgent
        from streams.models.transcriber import WhisperTranscriber

        # 0: share the cores among the replicas that transcribe at once.
        cpu_threads = settings.whisper_cpu_threads or max(
            1, (os.cpu_count() or 1) // settings.whisper_concurrency
        )
        transcriber = WhisperTranscriber(
            settings.whisper_model,
            device=settings.whisper_device,
            compute_type=settings.whisper_compute_type,
            beam_size=settings.whisper_beam_size,
            cpu_threads=cpu_threads,
            workers=settings.whisper_concurrency,
            language=settings.whisper_language,
        )
        agents.append(
            TranscribeAgent(
                transcriber,
                concurrency=settings.whisper_concurrency,
                max_seconds=settings.voice_max_seconds,
                silence_dbfs=settings.voice_silence_dbfs,
                metrics=metrics,
                max_records_per_batch=settings.voice_batch_max_records,
            )
        )
    if "score" in names:
        from agents.score import ScoreAgent
        from agents.scoring import ValueScorer, load_scorer_config

        scorer = ValueScorer(load_scorer_config(settings.scorer_config))
        agents.append(
            ScoreAgent(
                scorer,
                max_text_chars=settings.max_text_chars,
                interaction_ttl_s=settings.interaction_ttl_s,
                metrics=metrics,
                max_event_time_ahead_s=settings.max_event_time_ahead_s,
            )
        )
    if "memorize" in names:
        from agents.memorize import MemorizeAgent
        from streams.models.embedding_backends import load_embedder

        one_blas_thread()
        embedder = load_embedder(
            settings.embedding_model, settings.embedding_backend, cache_dir=settings.cache_dir,
            batch_size=settings.embed_batch_size, threads=settings.embedding_threads or None,
        )
        agents.append(
            MemorizeAgent(
                embedder,
                threshold=settings.near_duplicate_threshold,
                supersede_threshold=settings.supersede_threshold,
                same_frame_threshold=settings.supersede_same_frame_threshold,
                max_text_chars=settings.max_text_chars,
                embed_batch_size=settings.embed_batch_size,
                metrics=metrics,
            )
        )
    if "summarize" in names:
        agents.append(build_summarize(settings, metrics))
    return agents


def build_summarize(settings: Settings, metrics: WorkerMetrics) -> Agent:
    """The summarize agent, with the LLM rewriter when an endpoint is configured."""
    from agents.summarize import SummarizeAgent
    from agents.summarizing import ChatRewriter, CircuitBreaker

    rewriter = None
    if settings.summary_llm_url:
        key = settings.summary_llm_api_key
        rewriter = ChatRewriter(
            settings.summary_llm_url,
            settings.summary_llm_model,
            api_key=key.get_secret_value() if key else None,
            timeout_s=settings.summary_llm_timeout_s,
            breaker=CircuitBreaker(
                settings.summary_llm_failures_to_open, settings.summary_llm_cooldown_s
            ),
            on_outcome=lambda outcome: metrics.summary_rewrites.labels(outcome).inc(),
        )
    return SummarizeAgent(
        window_s=settings.summary_window_s,
        grace_s=settings.summary_grace_s,
        max_highlights=settings.summary_max_highlights,
        metrics=metrics,
        rewriter=rewriter,
        rewrite_budget_s=settings.summary_llm_batch_budget_s,
    )


def run_worker(
    settings: Settings,
    names: Sequence[str] = AGENT_NAMES,
    stop: threading.Event | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Provision topics, load models, serve metrics, and process until stopped."""
    metrics = WorkerMetrics()
    ensure_topics(settings)
    agents = build_agents(settings, names, metrics)
    stop = stop or threading.Event()
    liveness = Liveness(settings.liveness_timeout_s)
    watchdog = None
    if threading.current_thread() is threading.main_thread():
        # A process of its own: SIGTERM always ends it, and so does a stuck client call.
        batch_collector()
        watchdog = Watchdog(
            stop, stop_grace_s=settings.stop_grace_s, call_grace_s=settings.client_call_grace_s
        ).start()
    try:
        runtime = Runtime(settings, agents, metrics, watchdog=watchdog, liveness=liveness)
        changelogs = [runtime.changelog_topic(s) for a in agents for s in a.stores]
        ensure_changelog_topics(settings, changelogs)
        if settings.metrics_port:
            metrics.registry.register(StateDirCollector("worker", settings.worker_data_dir))
            metrics.serve(settings.metrics_port, addr=settings.metrics_host,
                          health=liveness.report)
            logger.info(
                "metrics on http://%s:%d/metrics, liveness on /healthz",
                settings.metrics_host, settings.metrics_port,
            )
        logger.info(
            "worker %s of %s running agents %s", settings.worker_id, settings.app_id,
            ", ".join(a.name for a in agents),
        )
        runtime.run(stop, on_ready)
    except KafkaException as exc:
        # Fatal (e.g. fenced after a broker restart, or a transaction the broker can no
        # longer complete): crash-only, a supervisor restarts the worker (exit code 1).
        logger.critical("fatal Kafka client error, exiting for a restart: %s", exc)
        raise
    finally:
        if watchdog is not None:
            watchdog.close()
