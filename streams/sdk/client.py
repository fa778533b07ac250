"""A small client for the read service (``memstream serve``), next to the producer SDK.

```python
with MemstreamProducer() as producer, MemoryClient(url, token) as client:
    result = producer.send(TelemetryEvent(...))
    hits = client.recall("rotate billing keys", consistency_token=result.consistency_token)
```
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from streams.common.exceptions import MemstreamError, UnavailableError


class ServiceError(MemstreamError):
    """The read service refused a request; ``status`` and ``detail`` say why."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"read service answered {status}: {detail}")
        self.status = status
        self.detail = detail


class NotFoundError(ServiceError):
    """No such memory for this tenant."""


class NotCaughtUpError(ServiceError):
    """The replica did not reach the consistency token in time (503): retry later."""

    retriable = True


class TooManyWaitersError(ServiceError):
    """The tenant already has the most requests waiting on consistency tokens (429): retry
    later."""

    retriable = True


class MemoryClient:
    """Recall, context, get and delete against one read service, as one tenant (its token)."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 30.0) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s,
                                  headers={"Authorization": f"Bearer {token}"})

    def recall(
        self,
        query: str,
        *,
        k: int = 10,
        min_similarity: float = 0.0,
        session_id: str | None = None,
        kinds: list[str] | None = None,
        time_from: datetime | None = None,
        time_to: datetime | None = None,
        min_value: float | None = None,
        consistency_token: str | None = None,
        include_history: bool = False,
    ) -> list[dict[str, Any]]:
        """The hits (memory id, text, similarity, value, occurrence count, source ids), all
        current; with ``include_history`` each carries the older values it superseded."""
        filters = {
            "session_id": session_id, "kinds": kinds, "min_value": min_value,
            "time_from": time_from.isoformat() if time_from else None,
            "time_to": time_to.isoformat() if time_to else None,
        }
        body = {"query": query, "k": k, "min_similarity": min_similarity,
                "filters": {k_: v for k_, v in filters.items() if v is not None} or None,
                "consistency_token": consistency_token, "include_history": include_history}
        return list(self._call("POST", "/v1/recall", json=body)["hits"])

    def context(
        self,
        session_id: str,
        query: str | None = None,
        *,
        token_budget: int = 512,
        k: int = 20,
        max_summaries: int = 3,
        consistency_token: str | None = None,
        include_history: bool = False,
    ) -> dict[str, Any]:
        """A context pack: pieces with their source ids, within the token budget (with
        ``include_history``, superseded values after the memory that replaced them)."""
        body = {"session_id": session_id, "query": query, "token_budget": token_budget, "k": k,
                "max_summaries": max_summaries, "consistency_token": consistency_token,
                "include_history": include_history}
        return dict(self._call("POST", "/v1/context", json=body))

    def whoami(self) -> str:
        """The tenant the read service maps this client's token to."""
        return str(self._call("GET", "/v1/whoami")["tenant"])

    def get(self, memory_id: str) -> dict[str, Any]:
        """One memory (raises NotFoundError)."""
        return dict(self._call("GET", f"/v1/memories/{memory_id}"))

    def delete(self, memory_id: str) -> dict[str, Any]:
        """Delete through the log; the answer carries a consistency token."""
        return dict(self._call("DELETE", f"/v1/memories/{memory_id}"))

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise UnavailableError(f"read service {self._http.base_url}: {exc}") from exc
        if response.status_code < 300:
            return response.json()
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        if response.status_code == 404:
            raise NotFoundError(404, detail)
        if response.status_code == 503 and isinstance(detail, dict) and "stage" in detail:
            raise NotCaughtUpError(503, detail)  # read-your-writes wait ran out: retry later
        if response.status_code == 429:
            raise TooManyWaitersError(429, detail)
        raise ServiceError(response.status_code, detail)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> MemoryClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def pack_text(pack: dict[str, Any], session_id: str) -> str:
    """A context pack as plain text for an assistant's context window: the session's
    summaries, then the memories, each with its id (empty string for an empty pack)."""
    summaries = [p for p in pack["pieces"] if p["type"] == "summary"]
    memories = [p for p in pack["pieces"] if p["type"] != "summary"]
    if not summaries and not memories:
        return ""
    lines = [f"# memstream: remembered context for session {session_id} "
             f"({pack['tokens_used']} of {pack['token_budget']} tokens)"]
    if summaries:
        lines.append("\n## Session summary")
        lines += [p["text"].strip() for p in summaries]
    if memories:
        lines.append("\n## Memories")
        lines += [f"- {' '.join(p['text'].split())} [memory {p['id']}]" for p in memories]
    return "\n".join(lines) + "\n"
