"""The end-to-end demo: telemetry, feedback and a voice note through the SDK; a worker that
transcribes, scores, de-duplicates, embeds, memorizes and summarizes them exactly-once; the
memories and the session summary read back.

(Just over 300 lines: a narrated script of eight steps, read top to bottom.)"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams.common.exceptions import MemstreamError
from streams.common.reader import read_topic
from streams.common.settings import Settings
from streams.ops.stats import pipeline_stats
from streams.sdk.client import MemoryClient
from streams.sdk.events import Feedback, TelemetryEvent
from streams.sdk.producer import MemstreamProducer

WAIT_S = 180.0
VOICE_NOTE = Path(__file__).parent / "assets" / "demo-voice-note.ogg"


class DemoError(MemstreamError):
    """The demo's pipeline did not produce what it waited for."""


def _events(tenant: str, start: datetime) -> tuple[list[TelemetryEvent | Feedback], Feedback]:
    """One tenant's session, two hours ago: a question asked three ways (exact and near
    duplicates), a helpful answer with early feedback, and an answer whose feedback
    arrives late."""
    session = f"{tenant}-s1"
    clock = iter(range(0, 3600, 20))

    def event(n: int, kind: str, text: str, **extra: Any) -> TelemetryEvent:
        return TelemetryEvent(tenant=tenant, session_id=session, interaction_id=f"{session}-i{n}",
                              kind=kind, text=text,
                              event_time=start + timedelta(seconds=next(clock)), **extra)

    events: list[TelemetryEvent | Feedback] = [
        event(1, "QUERY", "How do I rotate the API keys for the billing service?"),
        event(1, "RESPONSE", "Run `billing keys rotate`, then restart the billing workers.",
              model="demo-model", token_count=14),
        event(1, "OUTCOME", "Keys rotated; the billing workers are healthy.", outcome="SUCCESS"),
        Feedback(tenant=tenant, session_id=session, interaction_id=f"{session}-i1", rating=1.0,
                 label="helpful", event_time=start + timedelta(seconds=90)),
        event(2, "QUERY", "how do I rotate the API keys for the billing service"),  # exact dup
        event(3, "QUERY", "How can I rotate the API keys of the billing service?"),  # near dup
        event(4, "RESPONSE", "The quarterly report is generated every Monday at 06:00 UTC.",
              model="demo-model", token_count=12),
    ]
    late = Feedback(tenant=tenant, session_id=session, interaction_id=f"{session}-i4",
                    rating=0.9, label="accurate", event_time=start + timedelta(seconds=900))
    return events, late


def _memories(settings: Settings, tenant: str) -> dict[str, dict[str, Any]]:
    """The tenant's memories, latest version of each."""
    latest: dict[str, dict[str, Any]] = {}
    for record in read_topic(settings, "memories.v1", idle_timeout_s=2.0):
        value = record.value
        if value is not None and value["tenant"] == tenant:
            latest[value["memory_id"]] = value
    return latest


def _wait(what: str, done: Callable[[], bool], worker: _Worker, say: Callable[[str], None]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        worker.check()
        if time.monotonic() > deadline:
            raise DemoError(f"{what}: not seen after {WAIT_S:.0f}s (see the worker log above)")
        say(f"  … waiting for {what}")
        time.sleep(1.0)


class _Worker:
    """``memstream worker`` (all agents) in a thread of this process."""

    def __init__(self, settings: Settings) -> None:
        from agents.worker import AGENT_NAMES, run_worker

        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                run_worker(settings, AGENT_NAMES, self.stop, self.ready.set)
            except BaseException as exc:  # noqa: BLE001 - reported by check()
                self.error = exc
                self.ready.set()

        self._thread = threading.Thread(target=run, name="demo-worker", daemon=True)
        self._thread.start()

    def check(self) -> None:
        if self.error is not None:
            raise DemoError(f"the worker failed: {self.error}") from self.error

    def close(self) -> None:
        self.stop.set()
        self._thread.join(60)


def _show(memories: Iterable[dict[str, Any]], say: Callable[[str], None]) -> None:
    say(f"  {'memory id':<10} {'value':>6} {'conf':>5} {'seen':>4}  text / merged events")
    for m in sorted(memories, key=lambda m: m["event_time"]):
        value = "?" if m["value"] is None else f"{m['value']:.2f}"
        say(f"  {m['memory_id'][:8]:<10} {value:>6} {m['confidence']:>5.2f} "
            f"{m['occurrence_count']:>4}  {m['text']}")
        for merge in m["merges"]:
            say(f"  {'':<10} {'':>6} {'':>5} {'':>4}    + {merge['match']} duplicate "
                f"(similarity {merge['similarity']:.3f}) from event {merge['event_id'][:8]}")


def _summaries(settings: Settings, tenant: str, session: str) -> list[dict[str, Any]]:
    """The session's summaries, latest version of each window."""
    latest: dict[str, dict[str, Any]] = {}
    for record in read_topic(settings, "summaries.v1", idle_timeout_s=2.0):
        value = record.value
        if value is not None and value["tenant"] == tenant and value["session_id"] == session:
            latest[value["summary_id"]] = value
    return list(latest.values())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ask_the_service(
    settings: Settings, tenant: str, session: str, token: str, say: Callable[[str], None]
) -> None:
    """Start ``memstream serve`` with a token for the tenant; recall and build a context pack,
    reading our own writes (the consistency token of the last event sent)."""
    bearer = secrets.token_urlsafe(16)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    say(f"\n6. the read service (`memstream serve` on {url}), asked as tenant {tenant}")
    with tempfile.TemporaryDirectory(prefix="memstream-demo-serve-") as data_dir:
        env = {**os.environ, "MEMSTREAM_API_TOKENS": f"{bearer}={tenant}",
               "MEMSTREAM_SERVE_DATA_DIR": data_dir, "MEMSTREAM_SERVE_PORT": str(port),
               "MEMSTREAM_TOPIC_PREFIX": settings.topic_prefix,
               "MEMSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
               "MEMSTREAM_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
               "MEMSTREAM_APP_ID": settings.app_id, "MEMSTREAM_CONSISTENCY_TIMEOUT_S": "30"}
        log = Path(data_dir) / "serve.log"
        with log.open("wb") as out:
            service = subprocess.Popen([sys.executable, "-m", "streams", "serve", "--plain-logs"],
                                       env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(url, service, log)
            with MemoryClient(url, bearer) as client:
                query = "How often do the billing keys rotate?"
                say(f"  POST /v1/recall {query!r}")
                for hit in client.recall(query, k=3, consistency_token=token):
                    value = "?" if hit["value"] is None else f"{hit['value']:.2f}"
                    say(f"    {hit['similarity']:.3f}  value {value:>4}  x{hit['occurrence_count']}"
                        f"  {hit['text']}")
                pack = client.context(session, "rotate the billing keys", token_budget=400,
                                      consistency_token=token)
                say(f"  POST /v1/context session {session}: {len(pack['pieces'])} pieces, "
                    f"{pack['tokens_used']} of {pack['token_budget']} tokens")
                for piece in pack["pieces"]:
                    first = piece["text"].splitlines()[0]
                    say(f"    {piece['type']:<7} {piece['tokens']:>3} tokens, "
                        f"{len(piece['source_ids'])} source ids: {first[:90]}")
            _ask_over_mcp(env, url, bearer, session, say)
        finally:
            service.terminate()
            service.wait(30)


def _ask_over_mcp(env: dict[str, str], url: str, bearer: str, session: str,
                  say: Callable[[str], None]) -> None:
    """`memstream mcp` over stdio, driven by the MCP SDK's client as an assistant would."""
    say("\n7. an assistant's view: `memstream mcp` over stdio, called by the MCP SDK's client")
    try:
        from streams.mcp.demo import mcp_round_trip
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("mcp"):
            raise
        say("  skipped: the mcp extra is not installed (pip install 'memstream[mcp]')")
        return
    import anyio

    mcp_env = {**env, "MEMSTREAM_SERVE_URL": url, "MEMSTREAM_SERVE_TOKEN": bearer}
    mcp_env.pop("MEMSTREAM_API_TOKENS", None)
    anyio.run(mcp_round_trip, mcp_env, session, say)


def _wait_healthy(url: str, service: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise DemoError(f"memstream serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise DemoError(f"memstream serve not ready after {WAIT_S:.0f}s: {log.read_text()[-2000:]}")


def run_demo(settings: Settings, say: Callable[[str], None]) -> None:
    """Produce a session, run the pipeline over it, and show what it made of it.

    Each run has topics and an app of its own (prefix ``demo-<id>.``): event time, which
    closes summary windows, then starts fresh, and a user's own data is never touched."""
    from streams.common.admin import ensure_topics
    from streams.common.registry import register_all

    run = uuid.uuid4().hex[:6]
    tenant = f"demo-{run}"
    settings = settings.model_copy(update={
        "topic_prefix": f"{settings.topic_prefix}demo-{run}.", "app_id": f"memstream-demo-{run}"})
    ensure_topics(settings)
    register_all(settings, progress=lambda _line: None)
    now = datetime.now(UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    events, late = _events(tenant, start)
    session = events[0].session_id
    say(f"1. producing a session of tenant {tenant} (event times from {start:%H:%M} UTC) "
        f"through the SDK, on topics {settings.topic_prefix}*")
    with MemstreamProducer(settings) as producer:
        for event in events:
            result = producer.send(event)
            label = getattr(event, "kind", "FEEDBACK")
            say(f"  {label:<9} -> {result.topic}[{result.partition}]@{result.offset}  "
                f"{getattr(event, 'text', '')}")
        voice = producer.voice_note(VOICE_NOTE, tenant=tenant, session_id=session,
                                    event_time=start + timedelta(minutes=5))
        say(f"  VOICE     -> {voice.topic}[{voice.partition}]@{voice.offset}  "
            f"{VOICE_NOTE.name} ({VOICE_NOTE.stat().st_size // 1024} KiB of speech)")
    telemetry = [e for e in events if isinstance(e, TelemetryEvent)]
    voice_id = voice.event_id

    say("\n2. running the worker (transcribe → score → dedupe → embed → memorize → summarize, "
        "exactly-once); loading the models …")
    worker = _Worker(settings.model_copy(update={"worker_id": "demo", "metrics_port": 0}))
    try:
        worker.ready.wait(WAIT_S)
        worker.check()
        ids = {e.event_id for e in telemetry} | {voice_id}

        def covered() -> bool:
            memorized = {s for m in _memories(settings, tenant).values()
                         for s in m["source_event_ids"]}
            return ids <= memorized

        _wait("memories of the 6 events and the voice note", covered, worker, say)
        say("\n3. memories.v1 (read_committed): 7 events became these memories "
            "(the voice note's is its transcript)")
        _show(_memories(settings, tenant).values(), say)
        say("  '?' = value unknown: no feedback yet (confidence 0), never a made-up 0.5")

        say(f"\n4. late feedback for {late.interaction_id} (rating {late.rating}): a re-score")
        with MemstreamProducer(settings) as producer:
            producer.send(late)
        answer = telemetry[-1].event_id

        def rescored() -> bool:
            return any(m["value"] is not None and answer in m["source_event_ids"]
                       for m in _memories(settings, tenant).values())

        _wait("the re-scored memory", rescored, worker, say)
        _show([m for m in _memories(settings, tenant).values()
               if answer in m["source_event_ids"]], say)

        say("\n5. a new session now moves event time past the first one's hour: its summary")
        with MemstreamProducer(settings) as producer:
            last = producer.send(TelemetryEvent(tenant=tenant, session_id=f"{tenant}-s2",
                                                interaction_id=f"{tenant}-s2-i1", kind="QUERY",
                                                text="What changed in the billing service today?",
                                                event_time=now))
        _wait("the session summary", lambda: bool(_summaries(settings, tenant, session)),
              worker, say)
        for summary in _summaries(settings, tenant, session):
            say(f"  summaries.v1 {summary['summary_id'][:8]} ({len(summary['event_ids'])} "
                "events):")
            for line in summary["text"].splitlines():
                say(f"    {line}")

        _ask_the_service(settings, tenant, session, last.consistency_token, say)
    finally:
        worker.close()

    stats = pipeline_stats(settings)
    say(f"\n8. accounting (`MEMSTREAM_TOPIC_PREFIX={settings.topic_prefix} memstream stats`): "
        "ingested "
        f"{stats.ingested} = memories {stats.memories} + merged {stats.merged} + in deleted "
        f"memories {stats.deleted_events} + dead-lettered {stats.dead_lettered} + in flight "
        f"{stats.in_flight}")
