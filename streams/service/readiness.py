"""``/readyz``: real checks of broker, registry, index and model, cheap to ask often.

The broker and registry clients are made once and reused (a client per call cost a
librdkafka instance, its threads and a TCP connection each time); an answer is reused for
``ready_cache_s`` and concurrent callers share one check in flight. Every detail passes
through ``redact``: a URL with credentials in it never reaches the (unauthenticated) answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from starlette.concurrency import run_in_threadpool

from streams.common.redaction import redact
from streams.service.core import ReadService

Check = dict[str, Any]
_TIMEOUT_S = 2.0


class Readiness:
    """The four checks, their clients, and the last answer."""

    def __init__(self, service: ReadService) -> None:
        self.service = service
        self._admin: Any = None
        self._registry: Any = None
        self._clients_lock = threading.Lock()
        self._lock: asyncio.Lock | None = None
        self._last: tuple[float, bool, dict[str, Check]] | None = None
        self.checks_run = 0

    async def answer(self) -> tuple[bool, dict[str, Check]]:
        """(ready, checks): the cached answer while fresh, else one new check for everyone."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self.service.settings.ready_cache_s:
                return self._last[1], self._last[2]
            checks = await run_in_threadpool(self.run_checks)
            ready = all(c["ok"] for c in checks.values())
            self._last = (time.monotonic(), ready, checks)
            return ready, checks

    def run_checks(self) -> dict[str, Check]:
        """Run every check now (blocking; each bounded by two seconds)."""
        self.checks_run += 1
        checks = {"broker": self.broker(), "registry": self.registry(), "index": self.index(),
                  "model": self.model()}
        for check in checks.values():
            check["detail"] = redact(str(check["detail"]))
        return checks

    def _clients(self) -> tuple[Any, Any]:
        with self._clients_lock:
            if self._admin is None:
                from streams.common.admin import admin_client
                from streams.common.registry import registry_client

                settings = self.service.settings
                self._admin = admin_client(settings)
                self._registry = registry_client(
                    settings.model_copy(update={"request_timeout_s": _TIMEOUT_S}))
            return self._admin, self._registry

    def broker(self) -> Check:
        """The memories topic's metadata, from the broker."""
        topic = self.service.feed.topics["memories.v1"]
        try:
            meta = self._clients()[0].list_topics(topic, timeout=_TIMEOUT_S)
            found = meta.topics.get(topic)
            if found is None or found.error is not None:
                return {"ok": False, "detail": f"topic {topic} missing"}
            return {"ok": True, "detail": f"{len(meta.brokers)} broker(s)"}
        except Exception as exc:  # noqa: BLE001 - any client failure means not reachable
            return {"ok": False, "detail": f"{self.service.settings.bootstrap_servers}: {exc}"}

    def registry(self) -> Check:
        """The registry's subject list."""
        try:
            subjects = self._clients()[1].get_subjects()
            return {"ok": True, "detail": f"{len(subjects)} subject(s)"}
        except Exception as exc:  # noqa: BLE001 - connection and registry errors alike
            return {"ok": False, "detail": f"{self.service.settings.schema_registry_url}: {exc}"}

    def index(self) -> Check:
        """Initial catch-up done and lag within ``ready_max_lag``."""
        feed = self.service.feed
        lag = feed.lag()
        if not feed.alive:
            return {"ok": False, "detail": f"feed stopped: {feed.failed}", "lag": lag}
        if not feed.caught_up.is_set():
            return {"ok": False, "detail": "initial catch-up not finished", "lag": lag}
        bound = self.service.settings.ready_max_lag
        ok = lag <= bound
        return {"ok": ok, "detail": f"lag {lag} {'<=' if ok else '>'} {bound}", "lag": lag}

    def model(self) -> Check:
        """The embedding model loaded."""
        if self.service.model_error is not None:
            return {"ok": False, "detail": self.service.model_error}
        embedder = self.service.embedder
        return {"ok": True, "detail": f"{embedder.model_id} (dimension {embedder.dimension})"}

    def close(self) -> None:
        """Nothing to flush: the clients close with the process."""
        self._admin = self._registry = None
