"""The optional LLM rewrite against a real local HTTP server that answers, hangs or errs:
the extractive summary is always the fallback, calls are bounded, the breaker opens."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents.summarize import SummarizeAgent
from agents.summarizing import ChatRewriter, CircuitBreaker, summarize_window
from streams.common.observability import WorkerMetrics
from streams.processing.api import InputRecord
from streams.processing.context import StoreMap
from tests.unit.agents.test_summary_extractive import sample
from tests.unit.agents.test_summary_windows import HOUR, MIN, T0, DictStore


class ChatServer:
    """OpenAI-style ``/chat/completions`` whose behaviour the URL path picks."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.bodies: list[dict[str, object]] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                mode = self.path.strip("/").split("/")[0]
                server.hits[mode] = server.hits.get(mode, 0) + 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.bodies.append({"auth": self.headers.get("Authorization"), **body})
                if mode == "hang":
                    server.release.wait(10)
                    return
                if mode == "error":
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"upstream exploded")
                    return
                payload = (b"not json" if mode == "garbage" else json.dumps(
                    {"choices": [{"message": {"role": "assistant",
                                              "content": " A rewritten summary. "}}]}).encode())
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{mode}/v1"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer()
    yield server
    server.close()


def rewriter_factory(url: str, outcomes: list[str], *, failures: int = 2,
                     cooldown: float = 60.0, timeout: float = 0.3) -> ChatRewriter:
    return ChatRewriter(url, "tiny-model", api_key="k-123", timeout_s=timeout,
                        breaker=CircuitBreaker(failures, cooldown), on_outcome=outcomes.append)


def test_rewrite_replaces_text_when_endpoint_answers(chat_server: ChatServer) -> None:
    outcomes: list[str] = []
    rewriter = rewriter_factory(chat_server.url("ok"), outcomes)
    assert rewriter.rewrite(summarize_window(sample())) == "A rewritten summary."
    assert outcomes == ["ok"]
    sent = chat_server.bodies[0]
    assert sent["auth"] == "Bearer k-123" and sent["model"] == "tiny-model"
    rewriter.close()


@pytest.mark.parametrize("mode", ["hang", "error", "garbage"])
def test_failures_fall_back_within_the_timeout_and_open_the_breaker(
    chat_server: ChatServer, mode: str
) -> None:
    outcomes: list[str] = []
    rewriter = rewriter_factory(chat_server.url(mode), outcomes, failures=2)
    summary = summarize_window(sample())
    for _ in range(5):
        began = time.monotonic()
        assert rewriter.rewrite(summary) is None
        assert time.monotonic() - began < 1.5, "a rewrite call must be bounded by its timeout"
    assert chat_server.hits[mode] == 2, "after two failures the breaker stops calling"
    assert outcomes[2:] == ["skipped_open"] * 3
    assert rewriter.breaker.state == "open"
    rewriter.close()


def test_breaker_probes_after_cooldown_and_closes_on_success(chat_server: ChatServer) -> None:
    now = [0.0]
    breaker = CircuitBreaker(1, 30.0, clock=lambda: now[0])
    rewriter = ChatRewriter(chat_server.url("error"), "m", api_key=None, timeout_s=1.0,
                            breaker=breaker)
    summary = summarize_window(sample())
    assert rewriter.rewrite(summary) is None and breaker.state == "open"
    now[0] = 31.0
    assert breaker.state == "half-open"
    assert rewriter.rewrite(summary) is None  # the probe fails: open again
    assert breaker.state == "open" and chat_server.hits["error"] == 2
    now[0] = 62.0
    healthy = ChatRewriter(chat_server.url("ok"), "m", api_key=None, timeout_s=1.0,
                           breaker=breaker)
    assert healthy.rewrite(summary) == "A rewritten summary."
    assert breaker.state == "closed"
    rewriter.close()
    healthy.close()


class CapturingContext(StoreMap):
    """The part of BatchContext the agent uses: stores, and send (captured)."""

    def __init__(self, stores: dict[tuple[str, int], DictStore]) -> None:
        super().__init__(stores)
        self.sent: list[tuple[str, dict[str, object], str]] = []

    def send(self, topic: str, record: dict[str, object], *, key: str) -> None:
        self.sent.append((topic, record, key))


def scored(event_id: str, at: int) -> InputRecord:
    value = {"tenant": "acme", "session_id": "s1", "event_id": event_id, "event_time": at,
             "kind": "QUERY", "text": f"question {event_id} about billing keys",
             "content_hash": f"h{event_id}", "value": None, "revision": 0, "components": {}}
    return InputRecord("scored.v1", 0, 0, b"acme", b"", value)


def test_agent_emits_extractive_summary_when_the_endpoint_hangs(chat_server: ChatServer) -> None:
    metrics = WorkerMetrics()
    outcomes: list[str] = []
    agent = SummarizeAgent(window_s=3600, grace_s=600, max_highlights=3, metrics=metrics,
                           rewriter=rewriter_factory(chat_server.url("hang"), outcomes))
    ctx = CapturingContext({("summary-windows", 0): DictStore()})
    agent.rebuild(frozenset({0}), ctx)
    began = time.monotonic()
    agent.process([scored("a", T0 + MIN), scored("b", T0 + HOUR + MIN),
                   scored("c", T0 + 2 * HOUR + MIN), scored("late", T0 + 2 * MIN)], ctx)
    assert time.monotonic() - began < 3
    records = [r for topic, r, _key in ctx.sent if topic == "summaries.v1"]
    assert [r["event_ids"] for r in records] == [["a"], ["b"]]
    assert all(r["method"] == "extractive" for r in records)
    assert ctx.sent[0][2] == f"acme:{records[0]['summary_id']}"
    assert metrics.summary_dropped.labels("late")._value.get() == 1
    assert metrics.summaries.labels("closed")._value.get() == 2
    assert outcomes == ["timeout", "timeout"]
