"""The worker's liveness and its watchdog: SIGTERM and stuck client calls always end it.

A librdkafka call blocked past its timeout cannot be produced on demand with a real broker,
so a child process blocks its main thread in C the same way (a pthread mutex locked twice:
no signal interrupts it, and Python's signal handlers never run meanwhile).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from streams.common.observability import WorkerMetrics
from streams.processing.watchdog import EXIT_STALLED, EXIT_STOP_TIMEOUT, Liveness, Watchdog

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import ctypes, sys, threading, time
from streams.processing.watchdog import Watchdog

mode = sys.argv[1]
stop = threading.Event()
if mode != "unguarded":
    watchdog = Watchdog(stop, stop_grace_s=1.0, call_grace_s=1.0).start()
else:
    import signal
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

def block_in_c():
    # What a hung librdkafka call looks like to Python: the main thread inside C, never back.
    mutex = ctypes.create_string_buffer(64)  # zeroed: PTHREAD_MUTEX_INITIALIZER
    libc = ctypes.CDLL(None)
    libc.pthread_mutex_lock(mutex)
    print("blocked", flush=True)
    libc.pthread_mutex_lock(mutex)

if mode == "responsive":
    print("blocked", flush=True)
    while not stop.is_set():
        time.sleep(0.05)
    watchdog.close()
    sys.exit(0)
if mode == "stuck-call":
    with watchdog.deadline("send_offsets_to_transaction", 0.5):
        block_in_c()
block_in_c()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child(mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), mode],
        cwd=REPO, env={"PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "blocked"
    return proc


def test_sigterm_ends_a_worker_blocked_inside_a_client_call() -> None:
    proc = _child("blocked")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == EXIT_STOP_TIMEOUT
    assert time.monotonic() - started < 5


def test_without_the_watchdog_the_same_worker_ignores_sigterm() -> None:
    """The control: what the watchdog fixes (a blocked main thread never sees SIGTERM)."""
    proc = _child("unguarded")
    try:
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(3)
    finally:
        proc.kill()
        proc.wait(10)


def test_a_client_call_blocked_past_its_timeout_ends_the_worker() -> None:
    proc = _child("stuck-call")
    started = time.monotonic()
    assert proc.wait(10) == EXIT_STALLED
    assert time.monotonic() - started < 5


def test_sigterm_stops_a_responsive_loop_cleanly() -> None:
    proc = _child("responsive")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_idle_worker_stays_live() -> None:
    clock = Clock()
    live = Liveness(10, clock=clock)
    for _ in range(5):
        clock.now += 5
        live.beat(in_hand=False)
    assert live.report().live


def test_input_waiting_without_a_commit_is_not_live_until_one_commits() -> None:
    clock = Clock()
    live = Liveness(10, clock=clock)
    live.set_backlog(40)
    for _ in range(3):  # retrying a batch: the loop comes round, nothing commits
        clock.now += 4
        live.beat(in_hand=True)
    report = live.report()
    assert not report.live and "nothing committed for 12s" in report.reason
    assert report.backlog == 40
    live.progress()
    assert live.report().live


def test_a_loop_stuck_inside_one_iteration_is_not_live() -> None:
    clock = Clock()
    live = Liveness(10, clock=clock)
    live.beat(in_hand=False)
    clock.now += 11
    report = live.report()
    assert not report.live and "stuck" in report.reason


def test_a_returned_client_call_moves_the_loop_but_is_not_progress() -> None:
    # After a broker restart flush, send_offsets and commit may each run to their own
    # bound: calls that return are the loop moving; only a commit is progress.
    clock = Clock()
    live = Liveness(10, clock=clock)
    live.set_backlog(5)
    live.beat(in_hand=True)
    for _ in range(3):
        clock.now += 8
        live.call_returned()
    report = live.report()
    assert report.loop_age_s == 0
    assert not report.live and "nothing committed for 24s" in report.reason


def test_a_stopped_loop_is_not_live() -> None:
    live = Liveness(10)
    live.stopped()
    assert not live.report().live


def test_healthz_answers_next_to_metrics() -> None:
    clock = Clock()
    live = Liveness(10, clock=clock)
    metrics = WorkerMetrics()
    metrics.transactions.labels("commit").inc()
    port = free_port()
    metrics.serve(port, health=live.report)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 5
    while True:
        try:
            ok = httpx.get(f"{base}/healthz", timeout=2)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert ok.status_code == 200 and ok.json()["live"] is True
    live.set_backlog(3)
    clock.now += 30
    stalled = httpx.get(f"{base}/healthz", timeout=2)
    assert stalled.status_code == 503
    assert json.loads(stalled.text)["live"] is False
    assert "memstream_transactions_total" in httpx.get(f"{base}/metrics", timeout=2).text


class HangingProducer:
    """send_offsets_to_transaction blocks past its timeout until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def send_offsets_to_transaction(self, offsets: object, meta: object, timeout: float) -> None:
        self.release.wait(30)

    def commit_transaction(self, timeout: float) -> None:
        raise AssertionError("committed after a stuck send_offsets_to_transaction")


class FakeConsumer:
    def consumer_group_metadata(self) -> object:
        return object()


def test_the_runtime_guards_its_transaction_calls(settings_factory) -> None:  # type: ignore[no-untyped-def]
    """The commit protocol runs send_offsets_to_transaction under the watchdog's deadline."""
    from confluent_kafka import TopicPartition

    from streams.processing.runtime import Runtime

    settings = settings_factory(request_timeout_s=0.2, metrics_port=0)
    exits: list[int] = []
    producer = HangingProducer()

    def fake_exit(code: int) -> None:
        exits.append(code)
        producer.release.set()

    watchdog = Watchdog(threading.Event(), stop_grace_s=5, call_grace_s=0.3, exit=fake_exit)
    watchdog.start(signals=False)
    runtime = Runtime(settings, [], watchdog=watchdog, clients=(FakeConsumer(), producer))  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(AssertionError, match="committed after"):
        runtime.transactions._commit([TopicPartition("t", 0, 1)])
    watchdog.close()
    assert exits == [EXIT_STALLED]
    assert time.monotonic() - started < 3


def test_static_membership_can_be_turned_off(settings_factory) -> None:  # type: ignore[no-untyped-def]
    from streams.processing.clients import consumer_config

    on = consumer_config(settings_factory(metrics_port=0, app_id="a", worker_id="w-3"))
    off = consumer_config(settings_factory(metrics_port=0, static_membership=False))
    assert on["group.instance.id"] == "a-w-3"
    assert "group.instance.id" not in off
