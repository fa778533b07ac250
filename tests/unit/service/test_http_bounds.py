"""The read service stays bounded for any client: bodies, tokens, labels, errors, /readyz."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from confluent_kafka import KafkaError, KafkaException
from fastapi.testclient import TestClient

from streams.common.partitioning import partition_for_tenant
from streams.service.http import create_app
from streams.service.readiness import Readiness
from tests.unit.service.conftest import ACME, GLOBEX, FakeOffsets

ACME_P = partition_for_tenant("acme", 4)


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80), "state": {}}


@pytest.mark.parametrize("auth", [None, b"Bearer wrong", b"tok-acme"])
def test_the_token_is_checked_before_the_body_is_read(service_factory: Any,
                                                      auth: bytes | None) -> None:
    app = create_app(service_factory())
    headers = [(b"content-type", b"application/json"), (b"content-length", b"104857600")]
    if auth is not None:
        headers.append((b"authorization", auth))
    sent: list[dict[str, Any]] = []
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(_scope("POST", "/v1/recall", headers), receive, send))
    assert sent[0]["status"] == 401 and reads == 0


def test_bodies_over_the_limit_get_413_declared_or_chunked(service_factory: Any) -> None:
    client = TestClient(create_app(service_factory()))
    big = json.dumps({"query": "q" * 600_000}).encode()
    declared = client.post("/v1/recall", content=big, headers={**ACME, "content-type":
                                                               "application/json"})
    assert declared.status_code == 413 and "524288 bytes" in declared.json()["detail"]

    def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 65536

    chunked = client.post("/v1/recall", content=chunks(), headers=ACME)
    assert chunked.status_code == 413
    # Even without a body model (GET /healthz), no path takes a body over the limit.
    assert client.request("GET", "/healthz", content=big).status_code == 413


def test_the_largest_valid_requests_fit_under_the_body_limit(service_factory: Any) -> None:
    service = service_factory()
    client = TestClient(create_app(service))
    astral = "\U0001f600" * 32_000  # 12 bytes each once \\u-escaped
    token = ",".join([f"memories.v1:{ACME_P}:0"] * 8)
    recall = {"query": astral, "k": 200, "min_similarity": -1.0, "consistency_token": token,
              "filters": {"session_id": astral[:256], "kinds": [astral[:64]] * 16,
                          "time_from": "2026-11-25T10:00:00+00:00",
                          "time_to": "2026-11-25T10:00:00+00:00", "min_value": 0.5}}
    context = {"session_id": astral[:256], "query": astral, "token_budget": 100_000, "k": 200,
               "max_summaries": 50, "min_similarity": -1.0, "consistency_token": token}
    service.embedder = _Ones()
    for path, body in (("/v1/recall", recall), ("/v1/context", context)):
        raw = json.dumps(body).encode()  # ensure_ascii: the largest encoding of these texts
        assert len(raw) < service.settings.serve_max_body_bytes
        answer = client.post(path, content=raw, headers={**ACME, "content-type":
                                                         "application/json"})
        assert answer.status_code == 200, answer.text[:300]


class _Ones:
    model_id = "sentence-transformers/all-MiniLM-L6-v2"
    dimension = 16

    def embed(self, texts: list[str]) -> Any:
        import numpy as np
        return np.ones((len(texts), 16), dtype=np.float32) / 4.0

    def count_tokens(self, text: str) -> int:
        return len(text)


def test_metric_labels_stay_bounded_whatever_the_method_or_path(client: TestClient) -> None:
    for n in range(300):
        client.request(f"M{n}X", f"/no/such/{n}")
        client.request(f"Q{n}", "/v1/recall", headers=ACME)
    client.get(f"/v1/memories/{'x' * 50}", headers=ACME)
    text = client.get("/metrics").text
    series = [line for line in text.splitlines()
              if line.startswith("memstream_serve_request_seconds_count")]
    methods = {s.split('method="')[1].split('"')[0] for s in series}
    routes = {s.split('route="')[1].split('"')[0] for s in series}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert routes <= {"unmatched", "/v1/recall", "/v1/memories/{memory_id}", "/metrics"}
    assert len(series) < 12


@pytest.mark.parametrize(("raw", "field", "words"), [
    (b'{"query": "x", "min_similarity": NaN}', "min_similarity", "finite"),
    (b'{"query": "x", "filters": {"min_value": Infinity}}', "min_value", "finite"),
    (b'{"query": "\\ud800 lone"}', "query", "unicode"),
    (b'{"query": "x", "filters": {"time_from": "0001-01-01T00:00:00"}}', "time_from",
     "time zone"),
    (b'{"query": "x", "consistency_token": "telemetry.v1:99999999999999999999:1"}',
     "consistency_token", "outside"),
    (b'{"query": "x", "consistency_token": "telemetry.v1:-1:1"}', "consistency_token",
     "outside"),
    (b'{"query": "x", "consistency_token": "telemetry.v1:0:99999999999999999999"}',
     "consistency_token", "outside"),
])
def test_hostile_values_get_a_clear_4xx_never_a_500(client: TestClient, raw: bytes, field: str,
                                                    words: str) -> None:
    answer = client.post("/v1/recall", content=raw,
                         headers={**ACME, "content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert any(field in [str(p) for p in d["loc"]] and words in d["msg"] for d in detail), detail


def test_an_aware_year_one_date_is_a_valid_filter(client: TestClient) -> None:
    body = {"query": "memory number 3 of acme",
            "filters": {"time_from": "0001-01-01T00:00:00+05:00", "time_to": "9999-12-31T23:59Z"}}
    answer = client.post("/v1/recall", json=body, headers=ACME)
    assert answer.status_code == 200 and answer.json()["hits"]


def test_a_422_does_not_echo_the_whole_input(client: TestClient) -> None:
    huge = "q" * 400_000
    answer = client.post("/v1/recall", json={"query": huge, "k": "many"}, headers=ACME)
    assert answer.status_code == 422
    assert len(answer.content) < 2_000
    assert "400000 characters" in answer.text
    many = client.post("/v1/recall", json={"query": "x", "filters": {"kinds": [1] * 15}},
                       headers=ACME)
    assert many.status_code == 422 and len(many.json()["detail"]) <= 10
    assert many.json()["errors"] == 15


def test_a_token_may_name_only_the_callers_own_partition(client: TestClient) -> None:
    other = (ACME_P + 1) % 4
    for token, words in (
        (f"telemetry.v1:{other}:1", "partition"),
        (",".join([f"telemetry.v1:{ACME_P}:1"] * 9), "9 positions, over the limit of 8"),
        (f"telemetry.v1:{ACME_P}:1," * 300, "characters"),
        ("junk", "expected"),
    ):
        answer = client.post("/v1/recall", json={"query": "memory number 3 of acme",
                                                 "consistency_token": token}, headers=ACME)
        assert answer.status_code == 422, answer.text[:200]
        assert words in answer.text
    ok = client.post("/v1/recall", json={"query": "memory number 3 of acme",
                                         "consistency_token": f"telemetry.v1:{ACME_P}:1"},
                     headers=ACME)
    assert ok.status_code == 200


def test_every_wait_ends_at_the_timeout_even_when_broker_reads_are_slow(
        service_factory: Any) -> None:
    service = service_factory(offsets=FakeOffsets(stuck=True, delay=2.0),
                              consistency_timeout_s=0.5)
    client = TestClient(create_app(service))
    started = time.monotonic()
    answer = client.post("/v1/recall", json={"query": "memory number 3 of acme",
                                             "consistency_token": f"telemetry.v1:{ACME_P}:5"},
                         headers=ACME)
    took = time.monotonic() - started
    assert answer.status_code == 503 and "committing past" in answer.json()["detail"]["stage"]
    assert took < 1.2, f"a 0.5 s wait took {took:.2f}s"


class TimingOutOffsets(FakeOffsets):
    """A broker whose committed-offset reads time out inside librdkafka (seen with 100
    waits pending on a loaded machine): a KafkaException, not a Python TimeoutError."""

    def committed(self, topic: str, partition: int, timeout: float) -> int:
        self._read(timeout)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT,
                                        "Failed to get committed offsets: Local: Timed out"))


def test_a_broker_read_that_times_out_is_a_503_naming_the_stage_not_a_500(
        service_factory: Any) -> None:
    service = service_factory(offsets=TimingOutOffsets(), consistency_timeout_s=0.5)
    client = TestClient(create_app(service), raise_server_exceptions=False)
    answer = client.post("/v1/recall", json={"query": "memory number 3 of acme",
                                             "consistency_token": f"telemetry.v1:{ACME_P}:5"},
                         headers=ACME)
    assert answer.status_code == 503, answer.text[:300]
    assert "Timed out" in answer.json()["detail"]["stage"]


def test_waiting_requests_do_not_starve_other_tenants(service_factory: Any) -> None:
    """60 waits that can never be satisfied (more than the 40 worker threads) while another
    tenant's recall and /healthz stay fast; past the per-tenant cap a wait gets 429."""
    service = service_factory(offsets=FakeOffsets(stuck=True, delay=0.01),
                              consistency_timeout_s=3.0, consistency_max_waiters=60)
    app = create_app(service)

    async def scenario() -> tuple[list[int], float, float, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                     timeout=30) as http:
            body = {"query": "memory number 3 of acme",
                    "consistency_token": f"telemetry.v1:{ACME_P}:5"}
            waits = [asyncio.create_task(http.post("/v1/recall", json=body, headers=ACME))
                     for _ in range(60)]
            await asyncio.sleep(0.5)
            t0 = time.monotonic()
            other = await http.post("/v1/recall", json={"query": "memory number 2 of globex"},
                                    headers=GLOBEX)
            recall_s = time.monotonic() - t0
            assert other.status_code == 200
            t0 = time.monotonic()
            assert (await http.get("/healthz")).status_code == 200
            health_s = time.monotonic() - t0
            extra = await http.post("/v1/recall", json=body, headers=ACME)
            codes = [(await w).status_code for w in waits]
            return codes, recall_s, health_s, extra.status_code

    codes, recall_s, health_s, extra = asyncio.run(scenario())
    assert codes == [503] * 60
    assert recall_s < 0.5 and health_s < 0.5, (recall_s, health_s)
    assert extra == 429


def test_readyz_reuses_its_clients_caches_briefly_and_redacts_credentials(
        service_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.common.registry as registry

    made = []
    real = registry.registry_client
    monkeypatch.setattr(registry, "registry_client", lambda s: made.append(1) or real(s))
    monkeypatch.setattr(Readiness, "broker", lambda _s: {
        "ok": False, "detail": "sasl_ssl://bob:broker-pw@10.0.0.1:9093: timed out"})
    service = service_factory(
        schema_registry_url="http://reader:hunter2@127.0.0.1:1/apis/ccompat/v7",
        ready_cache_s=0.0)
    client = TestClient(create_app(service))
    for _ in range(3):
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert "hunter2" not in answer.text and "broker-pw" not in answer.text
        assert "http://***@127.0.0.1:1" in answer.json()["checks"]["registry"]["detail"]
    assert len(made) == 1, "one registry client for every check"

    cached = service_factory(ready_cache_s=60.0)
    app = create_app(cached)
    monkeypatch.setattr(Readiness, "registry", lambda _s: {"ok": True, "detail": "fake"})
    client = TestClient(app)
    for _ in range(50):
        client.get("/readyz")
    assert app.state.readiness.checks_run == 1
