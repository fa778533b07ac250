"""The read service on the real stack: real worker and `memstream serve` processes."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.dedupe import memory_id
from streams.common.admin import ensure_topics
from streams.common.reader import read_topic
from streams.common.registry import register_all
from streams.common.settings import Settings, load_settings
from streams.sdk.client import MemoryClient, NotCaughtUpError, NotFoundError
from streams.sdk.events import TelemetryEvent
from streams.sdk.producer import MemstreamProducer
from tests.integration.harness import start_worker, stop_worker, wait_ready, worker_settings
from tests.integration.service_harness import Service


@pytest.fixture(scope="module")
def live(dev_stack, tmp_path_factory) -> Iterator[tuple[Settings, Service]]:  # type: ignore[no-untyped-def]
    """A provisioned prefix with a worker and a read service running."""
    tmp = tmp_path_factory.mktemp("live")
    base = load_settings(bootstrap_servers=dev_stack.bootstrap,
                         schema_registry_url=dev_stack.registry_url,
                         topic_prefix=f"pytest.service.{uuid.uuid4().hex[:8]}.", partitions=2,
                         request_timeout_s=10.0)
    settings = worker_settings(base, tmp)
    ensure_topics(settings)
    register_all(settings, progress=lambda _m: None)
    log = tmp / "worker.log"
    worker = start_worker(settings, log)
    service = Service(settings, tmp)
    try:
        wait_ready(log, 0)
        service.start()
        yield settings, service
    finally:
        if service.proc is not None:
            service.stop()
        assert stop_worker(worker) == 0, log.read_text()[-3000:]


def send(settings: Settings, tenant: str, text: str, session: str = "s1") -> Any:
    with MemstreamProducer(settings) as producer:
        return producer.send(TelemetryEvent(tenant=tenant, session_id=session,
                                            interaction_id=f"i-{uuid.uuid4().hex[:6]}",
                                            kind="QUERY", text=text))


def test_read_your_writes_with_the_producer_token(live: tuple[Settings, Service]) -> None:
    settings, service = live
    # The service waits up to MEMSTREAM_CONSISTENCY_TIMEOUT_S (30 s) before its 503: the
    # client must wait longer than that, not exactly as long.
    with MemoryClient(service.url, "tok-acme", timeout_s=60) as acme:
        texts = ["How do I rotate the signing keys of the payment cluster?",
                 "The nightly backup of the wiki failed because the disk was full.",
                 "Book a table for four at the Italian place on Friday evening."]
        for n, text in enumerate(texts):
            result = send(settings, "acme", text)
            assert result.topic == settings.topic("telemetry.v1")
            hits = acme.recall(text, k=3, consistency_token=result.consistency_token)
            assert hits and hits[0]["text"] == text, f"write {n} not visible through its token"
            assert hits[0]["similarity"] > 0.99
            assert hits[0]["source_event_ids"] == [result.event_id]
        # A token the pipeline cannot reach in time: 503 with the stage and the lag.
        future = f"{settings.topic('telemetry.v1')}:{result.partition}:{result.offset + 10_000}"
        short = httpx.post(f"{service.url}/v1/recall", headers={"Authorization": "Bearer tok-acme"},
                           json={"query": "x", "consistency_token": future}, timeout=60)
        assert short.status_code == 503
        assert "committing past" in short.json()["detail"]["stage"]
        assert "lag" in short.json()["detail"]
        with pytest.raises(NotCaughtUpError):
            acme.recall("x", consistency_token=future)


def test_tokens_and_tenant_isolation(live: tuple[Settings, Service]) -> None:
    settings, service = live
    text = "Where is the quarterly revenue dashboard for the finance team?"
    a = send(settings, "acme", text, session="fin")
    g = send(settings, "globex", text, session="fin")
    with MemoryClient(service.url, "tok-acme") as acme, \
            MemoryClient(service.url, "tok-globex") as globex:
        hits_a = acme.recall(text, consistency_token=a.consistency_token)
        hits_g = globex.recall(text, consistency_token=g.consistency_token)
        id_a, id_g = memory_id("acme", text), memory_id("globex", text)
        assert hits_a[0]["memory_id"] == id_a and hits_g[0]["memory_id"] == id_g
        assert id_g not in {h["memory_id"] for h in hits_a}
        assert id_a not in {h["memory_id"] for h in hits_g}
        assert acme.get(id_a)["memory_id"] == id_a
        with pytest.raises(NotFoundError):
            acme.get(id_g)
        with pytest.raises(NotFoundError):
            acme.delete(id_g)
        ctx = globex.context("fin", text, token_budget=64)
        assert ctx["pieces"] and all(p["id"] != id_a for p in ctx["pieces"])
        assert ctx["pieces"][0]["source_ids"] == [g.event_id]
        assert ctx["tokens_used"] <= 64
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "tok-acme"}):
        r = httpx.post(f"{service.url}/v1/recall", json={"query": text}, headers=headers)
        assert r.status_code == 401
    assert httpx.get(f"{service.url}/v1/memories/{id_a}").status_code == 401


def test_delete_goes_through_the_log_and_disappears_from_recall(
    live: tuple[Settings, Service]
) -> None:
    settings, service = live
    text = "Remember that the staging database password rotates every Friday."
    sent = send(settings, "acme", text)
    mid = memory_id("acme", text)
    with MemoryClient(service.url, "tok-acme") as acme:
        assert acme.recall(text, consistency_token=sent.consistency_token)[0]["memory_id"] == mid
        deleted = acme.delete(mid)
        # The read service writes a command; it never writes memories.v1.
        assert deleted["applied"] and deleted["consistency_token"].startswith(
            settings.topic("commands.v1"))
        assert mid not in {h["memory_id"] for h in acme.recall(text, k=10)}
        with pytest.raises(NotFoundError):
            acme.get(mid)
    (command,) = [r for r in read_topic(settings, "commands.v1") if r.key == f"acme:{mid}"]
    assert command.value["action"] == "DELETE" and command.value["memory_id"] == mid
    assert command.value["source_event_ids"] == [sent.event_id]
    assert text not in repr(command.value), "a command carries ids, never the content"
    records = [r for r in read_topic(settings, "memories.v1") if r.key == f"acme:{mid}"]
    last = records[-1].value
    assert last is not None
    assert last["deleted"] and last["text"] == "" and last["embedding"] == b""
    # memorize applied it: its deleted record names the command as its last change.
    assert last["event_id"] == command.value["event_id"] and last["occurrence_count"] == 1
    # A second replica built from the log alone does not have it either.
    other = Service(settings, service.tmp).start()
    try:
        with MemoryClient(other.url, "tok-acme") as acme:
            assert mid not in {h["memory_id"] for h in acme.recall(text, k=10)}
    finally:
        other.stop()


def test_repeating_deleted_content_does_not_resurrect_it(live: tuple[Settings, Service]) -> None:
    settings, service = live
    text = "The office wifi password is on the fridge note."
    first = send(settings, "acme", text)
    mid = memory_id("acme", text)
    with MemoryClient(service.url, "tok-acme") as acme:
        acme.recall(text, consistency_token=first.consistency_token)
        acme.delete(mid)
        again = send(settings, "acme", text)
        hits = acme.recall(text, consistency_token=again.consistency_token)
        assert mid not in {h["memory_id"] for h in hits}


def test_health_readiness_and_metrics(live: tuple[Settings, Service]) -> None:
    _settings, service = live
    assert httpx.get(f"{service.url}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{service.url}/readyz").json()
    assert ready["ready"] and set(ready["checks"]) == {"broker", "registry", "index", "model"}
    assert ready["checks"]["model"]["ok"], ready["checks"]["model"]
    metrics = httpx.get(f"{service.url}/metrics").text
    assert "memstream_serve_request_seconds_bucket" in metrics
    assert "memstream_serve_lag_records" in metrics
    assert 'memstream_serve_index_memories{kind="exact"}' in metrics
    spec = httpx.get(f"{service.url}/openapi.json").json()
    assert "/v1/recall" in spec["paths"]


def test_readiness_names_the_failing_dependency(live: tuple[Settings, Service],
                                                tmp_path: Path) -> None:
    settings, _service = live
    broken = settings.model_copy(update={"schema_registry_url": "http://127.0.0.1:9/apis"})
    service = Service(broken, tmp_path)
    service.start(wait=False)
    try:
        deadline = time.monotonic() + 60
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{service.url}/readyz", timeout=10)
                body = r.json()
                if "registry" in body.get("failing", []):
                    assert r.status_code == 503
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert "registry" in body.get("failing", []), body
        assert body["checks"]["broker"]["ok"]
    finally:
        service.stop()


def test_readiness_fails_while_the_local_registry_is_stopped(
    live: tuple[Settings, Service], dev_stack: Any
) -> None:
    """The real registry process is stopped (SIGSTOP: it keeps its state and resumes at
    once with SIGCONT) and readiness names it; liveness stays up."""
    _settings, service = live
    registry = next(c for c in dev_stack.status() if c.name == "registry")
    assert registry.pid is not None and registry.answering
    assert httpx.get(f"{service.url}/readyz", timeout=30).status_code == 200

    def ready_body() -> tuple[int, dict[str, Any]]:
        r = httpx.get(f"{service.url}/readyz", timeout=30)
        return r.status_code, r.json()

    os.kill(registry.pid, signal.SIGSTOP)
    try:
        # /readyz answers from its last check for MEMSTREAM_READY_CACHE_S (2 s).
        deadline = time.monotonic() + 15
        status, body = ready_body()
        while status == 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            status, body = ready_body()
        assert status == 503 and body["failing"] == ["registry"], body
        assert not body["checks"]["registry"]["ok"] and body["checks"]["broker"]["ok"]
        assert httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200
    finally:
        os.kill(registry.pid, signal.SIGCONT)
    deadline = time.monotonic() + 60
    while ready_body()[0] != 200:
        assert time.monotonic() < deadline, "readiness did not come back with the registry"
        time.sleep(0.5)


def test_a_model_that_does_not_load_leaves_the_service_live_but_not_ready(
    live: tuple[Settings, Service], tmp_path: Path
) -> None:
    settings, _service = live
    model = str(tmp_path / "no-such-model")
    service = Service(settings, tmp_path, env={"MEMSTREAM_EMBEDDING_MODEL": model})
    service.start(wait=False)
    try:
        deadline = time.monotonic() + 120
        ready: httpx.Response | None = None
        while time.monotonic() < deadline:
            assert service.proc is not None and service.proc.poll() is None, \
                service.log.read_text()[-3000:]
            try:
                ready = httpx.get(f"{service.url}/readyz", timeout=10)
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            if ready.json()["checks"]["index"]["ok"]:
                break  # the other checks have settled: only the model fails
            time.sleep(0.5)
        assert ready is not None, service.log.read_text()[-3000:]
        body = ready.json()
        assert ready.status_code == 503 and body["failing"] == ["model"], body
        assert body["checks"]["model"]["detail"].startswith(f"{model}: "), body
        assert httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200
        auth = {"Authorization": "Bearer tok-acme"}
        recall = httpx.post(f"{service.url}/v1/recall", json={"query": "anything"},
                            headers=auth, timeout=10)
        assert recall.status_code == 503 and model in recall.json()["detail"]
        context = httpx.post(f"{service.url}/v1/context", json={"session_id": "s1"},
                             headers=auth, timeout=10)
        assert context.status_code == 503
        assert service.proc.poll() is None, "the process must keep running"
    finally:
        service.stop()
    # Without its model the replica writes no snapshot over the real model's.
    assert not (service.data_dir / "CURRENT").exists()


def test_a_changed_fact_supersedes_and_history_keeps_both_with_intervals(
    live: tuple[Settings, Service]
) -> None:
    settings, service = live
    friday, tuesday = "The auth service deploys on Friday.", "The auth service deploys on Tuesday."
    first = send(settings, "acme", friday, session="deploys")
    with MemoryClient(service.url, "tok-acme", timeout_s=60) as acme:
        assert acme.recall(friday, k=1, consistency_token=first.consistency_token)[0][
            "text"] == friday
        second = send(settings, "acme", tuesday, session="deploys")
        hits = acme.recall("When does the auth service deploy?", k=5,
                           consistency_token=second.consistency_token)
        old_id, new_id = memory_id("acme", friday), memory_id("acme", tuesday)
        assert hits[0]["memory_id"] == new_id and hits[0]["text"] == tuesday
        assert old_id not in {h["memory_id"] for h in hits}
        assert (hits[0]["supersedes"], hits[0]["valid_until"]) == (old_id, None)

        (top, *_rest) = acme.recall("When does the auth service deploy?", k=5,
                                    include_history=True)
        (past,) = top["history"]
        assert (past["memory_id"], past["text"], past["superseded_by"]) == (
            old_id, friday, new_id)
        assert past["valid_from"] < past["valid_until"] == top["valid_from"]
        assert acme.get(old_id)["superseded_by"] == new_id

        pieces = acme.context("deploys", "auth service deploy day", include_history=True)[
            "pieces"]
        texts = [(p["type"], p["text"]) for p in pieces if p["type"] != "summary"]
        assert texts[:2] == [("memory", tuesday), ("superseded_memory", friday)]
        current = acme.context("deploys", "auth service deploy day")["pieces"]
        assert friday not in [p["text"] for p in current if p["type"] != "summary"]
    # In the log: the old memory's last record says what superseded it, and when.
    records = [r.value for r in read_topic(settings, "memories.v1")
               if r.key == f"acme:{old_id}" and r.value]
    assert records[-1]["superseded_by"] == new_id
    assert records[-1]["superseded_at"] == records[-1]["event_time"]
