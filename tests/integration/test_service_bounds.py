"""A real `memstream serve` on the local stack stays bounded for any client: bodies are
refused before they are read, consistency waits end at their timeout without starving
other tenants, /readyz does not grow threads, and slow connections are closed."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from streams.common.admin import ensure_topics
from streams.common.partitioning import partition_for_tenant
from streams.common.registry import register_all
from streams.common.settings import Settings, load_settings
from tests.integration.harness import worker_settings
from tests.integration.service_harness import Service

ACME = {"Authorization": "Bearer tok-acme"}
GLOBEX = {"Authorization": "Bearer tok-globex"}


@pytest.fixture(scope="module")
def bounded(dev_stack, tmp_path_factory) -> Iterator[tuple[Settings, Service]]:  # type: ignore[no-untyped-def]
    """A provisioned prefix (no worker: nothing ever commits) and a service with short
    limits."""
    tmp = tmp_path_factory.mktemp("bounded")
    base = load_settings(bootstrap_servers=dev_stack.bootstrap,
                         schema_registry_url=dev_stack.registry_url,
                         topic_prefix=f"pytest.bounds.{uuid.uuid4().hex[:8]}.", partitions=2,
                         request_timeout_s=10.0)
    settings = worker_settings(base, tmp)
    ensure_topics(settings)
    register_all(settings, progress=lambda _m: None)
    service = Service(settings, tmp, env={
        "MEMSTREAM_CONSISTENCY_TIMEOUT_S": "2", "MEMSTREAM_CONSISTENCY_MAX_WAITERS": "100",
        "MEMSTREAM_SERVE_HEADER_TIMEOUT_S": "2", "MEMSTREAM_SERVE_BODY_TIMEOUT_S": "2"})
    try:
        service.start()
        yield settings, service
    finally:
        if service.proc is not None:
            service.stop()


def _host_port(service: Service) -> tuple[str, int]:
    return "127.0.0.1", service.port


def _status_line(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    return sock.recv(4096).split(b"\r\n", 1)[0]


def _threads(service: Service) -> int:
    assert service.proc is not None
    status = Path(f"/proc/{service.proc.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:"))
               .split()[1])


def _rss_kb(service: Service) -> int:
    assert service.proc is not None
    status = Path(f"/proc/{service.proc.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def test_100mb_bodies_are_refused_before_they_are_read(bounded: tuple[Settings, Service]) -> None:
    _settings, service = bounded
    rss = _rss_kb(service)
    socks = []
    for auth in [b""] * 8 + [b"Authorization: Bearer tok-acme\r\n"] * 8:
        sock = socket.create_connection(_host_port(service))
        sock.sendall(b"POST /v1/recall HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + auth + b"Content-Length: 104857600\r\n\r\n" + b"x" * 65536)
        socks.append(sock)
    lines = [_status_line(s) for s in socks]
    for sock in socks:
        sock.close()
    assert lines[:8] == [b"HTTP/1.1 401 Unauthorized"] * 8
    assert lines[8:] == [b"HTTP/1.1 413 Request Entity Too Large"] * 8 or all(
        line.startswith(b"HTTP/1.1 413") for line in lines[8:]), lines[8:]
    assert _rss_kb(service) - rss < 50_000


def test_tokens_are_bounded_and_every_wait_ends_at_the_timeout(
        bounded: tuple[Settings, Service]) -> None:
    settings, service = bounded
    mine = partition_for_tenant("acme", 2)
    topic = settings.topic("telemetry.v1")
    never = f"{topic}:{mine}:{10**12}"
    started = time.monotonic()
    r = httpx.post(f"{service.url}/v1/recall", json={"query": "x", "consistency_token": never},
                   headers=ACME, timeout=30)
    took = time.monotonic() - started
    print(f"\nan unsatisfiable token with a 2 s timeout answered 503 after {took:.2f}s")
    assert r.status_code == 503 and "committing past" in r.json()["detail"]["stage"]
    assert took < 3.5, f"a 2 s wait took {took:.1f}s"
    for token, words in ((",".join([never] * 9), "9 positions, over the limit of 8"),
                         (",".join([never] * 300), "1024"),
                         (f"{topic}:{1 - mine}:1", "partition"),
                         (f"{topic}:99999999999999999999:1", "outside")):
        r = httpx.post(f"{service.url}/v1/recall", json={"query": "x", "consistency_token": token},
                       headers=ACME, timeout=30)
        assert r.status_code == 422 and words in r.text, r.text[:300]


def test_waiting_requests_do_not_starve_other_tenants_or_health(
        bounded: tuple[Settings, Service]) -> None:
    """100 waits that can never be satisfied (more than the 40 worker threads) while
    another tenant's recall and /healthz are timed."""
    settings, service = bounded
    never = f"{settings.topic('telemetry.v1')}:{partition_for_tenant('acme', 2)}:{10**12}"
    body = {"query": "x", "consistency_token": never}
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=200)) as http:
        http.post(f"{service.url}/v1/recall", json={"query": "warm up"}, headers=GLOBEX)
        with ThreadPoolExecutor(100) as pool:
            waits = [pool.submit(http.post, f"{service.url}/v1/recall", json=body, headers=ACME)
                     for _ in range(100)]
            time.sleep(0.7)
            t0 = time.monotonic()
            other = http.post(f"{service.url}/v1/recall", json={"query": "quarterly revenue"},
                              headers=GLOBEX)
            recall_s = time.monotonic() - t0
            t0 = time.monotonic()
            health = http.get(f"{service.url}/healthz")
            health_s = time.monotonic() - t0
            codes = [w.result().status_code for w in waits]
    print(f"\nwith 100 waits pending: other tenant's recall {recall_s * 1000:.0f} ms, "
          f"/healthz {health_s * 1000:.0f} ms")
    assert other.status_code == 200 and health.status_code == 200
    assert recall_s < 1.5 and health_s < 0.5, (recall_s, health_s)
    assert codes == [503] * 100


def test_readyz_reuses_its_clients(bounded: tuple[Settings, Service]) -> None:
    _settings, service = bounded
    assert httpx.get(f"{service.url}/readyz", timeout=10).status_code == 200
    before = _threads(service)
    started = time.monotonic()
    with httpx.Client(timeout=30) as http, ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(lambda _i: http.get(f"{service.url}/readyz").status_code,
                              range(200)))
    took = time.monotonic() - started
    print(f"\n200 /readyz calls: {took:.2f}s, threads {before} -> {_threads(service)}")
    assert codes == [200] * 200
    assert _threads(service) - before < 10, (before, _threads(service))
    assert took < 8, f"200 readiness calls took {took:.1f}s"


def test_trickling_connections_are_closed(bounded: tuple[Settings, Service]) -> None:
    _settings, service = bounded
    socks = [socket.create_connection(_host_port(service)) for _ in range(50)]
    for sock in socks:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            for sock in socks:
                try:
                    sock.sendall(b"X: 1\r\n")
                except OSError:
                    pass
            time.sleep(0.25)

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    time.sleep(4.0)
    stop.set()
    feeder.join()
    held = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            while sock.recv(65536):
                pass
        except BlockingIOError:
            held += 1
        except OSError:
            pass
        sock.close()
    assert held == 0, f"{held} of 50 trickling connections still held after 4 s"
