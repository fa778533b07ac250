"""Optional rewriting of extractive summaries by an OpenAI-compatible chat endpoint.

Never on the critical path: one call is bounded by a whole-request deadline, a circuit
breaker stops calling after repeated failures (and probes again after a cool-down), and
any failure leaves the extractive summary in place. A rewritten summary is marked
``method = "llm:<model>"``; it is the one part of a summary a replay may not re-produce.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol

import httpx

from agents.summarizing.exceptions import RewriteError
from agents.summarizing.extractive import Summary

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You rewrite activity summaries of an AI assistant's work session into three to five "
    "plain sentences. Keep every fact, number and name; add nothing; no preamble."
)
MAX_REWRITE_CHARS = 4000


class SummaryRewriter(Protocol):
    """Turns an extractive summary into better prose, or says it could not (None)."""

    name: str

    def rewrite(self, summary: Summary) -> str | None:
        """The rewritten text, or None to keep the extractive one."""


class CircuitBreaker:
    """Closed → open after ``failures_to_open`` consecutive failures; open → one probe
    after ``cooldown_s`` (half-open); a success closes it, a failed probe re-opens it."""

    def __init__(
        self,
        failures_to_open: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures_to_open = failures_to_open
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        """closed, open or half-open."""
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_s:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """Whether a call may go out now (a half-open breaker lets one probe through)."""
        with self._lock:
            state = self._state()
            if state == "half-open":
                self._opened_at = self._clock()  # the probe's outcome decides what is next
                return True
            return state == "closed"

    def success(self) -> None:
        """A call succeeded: close."""
        with self._lock:
            self._failures = 0
            self._opened_at = None

    def failure(self) -> None:
        """A call failed: count it, open at the threshold (or at once after a probe)."""
        with self._lock:
            self._failures += 1
            if self._opened_at is not None or self._failures >= self.failures_to_open:
                self._opened_at = self._clock()


class ChatRewriter:
    """``POST {base_url}/chat/completions`` with a bounded wait and a circuit breaker."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None,
        timeout_s: float,
        breaker: CircuitBreaker,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.name = f"llm:{model}"
        self.timeout_s = timeout_s
        self.breaker = breaker
        self._on_outcome = on_outcome or (lambda _outcome: None)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s))
        # httpx bounds each phase, not the whole exchange (a server trickling bytes would
        # never time out): the call runs in a thread and we stop waiting at the deadline.
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="summary-rewrite")

    def rewrite(self, summary: Summary) -> str | None:
        """The endpoint's rewrite of ``summary.text``, or None (failure, timeout, open)."""
        if not self.breaker.allow():
            self._on_outcome("skipped_open")
            return None
        future = self._executor.submit(self._call, summary.text)
        try:
            text = future.result(timeout=self.timeout_s)
        except (FutureTimeout, httpx.TimeoutException):
            future.cancel()
            self._failed(summary, f"no answer within {self.timeout_s:.1f}s", "timeout")
            return None
        except (httpx.HTTPError, RewriteError, ValueError) as exc:  # ValueError: not JSON
            self._failed(summary, str(exc) or type(exc).__name__, "error")
            return None
        self.breaker.success()
        self._on_outcome("ok")
        return text

    def _failed(self, summary: Summary, why: str, outcome: str) -> None:
        self.breaker.failure()
        self._on_outcome(outcome)
        logger.warning(
            "summary rewrite of %s failed (%s); keeping the extractive text; breaker %s",
            summary.summary_id, why, self.breaker.state,
        )

    def _call(self, text: str) -> str:
        response = self._client.post(
            self.url,
            json={
                "model": self.model,
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": text},
                ],
            },
        )
        response.raise_for_status()
        return _content(response.json())

    def close(self) -> None:
        """Stop waiting threads and the HTTP client."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _content(body: Any) -> str:
    try:
        text = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise RewriteError(f"chat completion: no choices[0].message.content ({exc!r})") from exc
    if not isinstance(text, str) or not text.strip():
        raise RewriteError("chat completion: empty content")
    text = text.strip()
    if len(text) > MAX_REWRITE_CHARS:
        raise RewriteError(f"chat completion: {len(text)} characters, over {MAX_REWRITE_CHARS}")
    return text
