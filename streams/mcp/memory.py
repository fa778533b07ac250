"""What the MCP tools do, without the MCP SDK: remember through the producer SDK, read
through the read service as the caller's tenant, and keep read-your-writes across calls.

The server is a client on both sides. Writes go to telemetry.v1 through
``MemstreamProducer`` (the tenant is the caller's, never an argument); reads go to
``memstream serve`` with the caller's own bearer token, so the read service scopes them to
the same tenant. Each write's consistency token is kept per tenant, and a later recall or
context that names none waits for the latest one: a model that remembers and then recalls
sees its write without passing the token along.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from streams.common.exceptions import UnavailableError, ValidationError
from streams.common.settings import Settings
from streams.common.tokens import token_digest
from streams.mcp.exceptions import TenantMismatchError, ToolInputError
from streams.sdk.client import (
    MemoryClient,
    NotCaughtUpError,
    NotFoundError,
    ServiceError,
    pack_text,
)
from streams.sdk.events import TelemetryEvent
from streams.sdk.producer import DeliveryResult, MemstreamProducer

logger = logging.getLogger(__name__)

T = TypeVar("T")

KINDS = ("NOTE", "QUERY", "RESPONSE", "TOOL_CALL", "OUTCOME")
MAX_METADATA_ENTRIES = 32
MAX_METADATA_CHARS = 512  # per key and per value
SUMMARY_BUDGET = 100_000  # the read service's largest token budget: every summary fits


class EventSender(Protocol):
    """The part of ``MemstreamProducer`` the server uses."""

    def send(self, event: Any) -> DeliveryResult: ...  # noqa: D102

    def close(self) -> None: ...  # noqa: D102


@dataclass(frozen=True)
class Caller:
    """Who calls: the bearer token presented to the read service, and the tenant this
    server maps it to (None: whatever the read service says)."""

    token: str
    tenant: str | None


class AssistantMemory:
    """remember / recall / context / forget / summaries for one caller at a time."""

    def __init__(
        self,
        settings: Settings,
        *,
        producer_factory: Callable[[Settings], EventSender] = MemstreamProducer,
        client_factory: Callable[[str, str], MemoryClient] | None = None,
    ) -> None:
        self.settings = settings
        self.url = settings.read_service_url
        # The read service waits up to consistency_timeout_s; the client waits longer.
        timeout = settings.consistency_timeout_s + settings.request_timeout_s + 5.0
        self._client_factory = client_factory or (
            lambda url, token: MemoryClient(url, token, timeout_s=timeout))
        self._producer_factory = producer_factory
        self._producer: EventSender | None = None
        self._lock = threading.Lock()
        self._clients: dict[str, MemoryClient] = {}
        self._tenants: dict[str, str] = {}  # token digest -> tenant, as the read service said
        self._written: dict[str, dict[tuple[str, int], int]] = {}  # tenant -> last positions

    # -- tools ------------------------------------------------------------------------------
    def remember(self, caller: Caller, text: str, session_id: str, kind: str = "NOTE",
                 metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Write one event through the SDK; the pipeline turns it into a memory."""
        if not text.strip():
            raise ToolInputError("remember: field 'text' is blank; it needs at least one "
                                 "non-space character")
        if not session_id.strip():
            raise ToolInputError("remember: field 'session' is blank")
        if kind not in KINDS:
            raise ToolInputError(f"remember: field 'kind' is {kind!r}; one of {', '.join(KINDS)}")
        attributes = {"via": "mcp", **_checked_metadata(metadata or {})}
        tenant = self._tenant(caller, writing=True)
        event = TelemetryEvent(tenant=tenant, session_id=session_id,
                               interaction_id=f"mcp-{uuid.uuid4()}", kind=kind, text=text,
                               attributes=attributes)
        try:
            with self._lock:
                if self._producer is None:
                    self._producer = self._producer_factory(self.settings)
                producer = self._producer
            result = producer.send(event)
        except ValidationError as exc:
            raise ToolInputError(f"remember: {exc}") from exc
        self._note_write(tenant, result.consistency_token)
        logger.info("remembered event %s at %s[%s]@%s", result.event_id, result.topic,
                    result.partition, result.offset)
        return {"event_id": result.event_id, "session": session_id, "kind": kind,
                "consistency_token": result.consistency_token}

    def recall(self, caller: Caller, query: str, *, k: int = 5, session_id: str | None = None,
               kinds: list[str] | None = None, min_value: float | None = None,
               time_from: datetime | None = None, time_to: datetime | None = None,
               consistency_token: str | None = None) -> dict[str, Any]:
        """The caller's memories most similar to the query, best first."""
        if not query.strip():
            raise ToolInputError("recall: field 'query' is blank")
        for kind in kinds or []:
            if kind not in KINDS:
                raise ToolInputError(f"recall: kinds has {kind!r}; each one of {', '.join(KINDS)}")
        client = self._client(caller)
        tenant = self._tenant(caller)

        def ask(token: str | None) -> list[dict[str, Any]]:
            return client.recall(query, k=k, session_id=session_id, kinds=kinds,
                                 min_value=min_value, time_from=time_from, time_to=time_to,
                                 consistency_token=token)

        hits, caught_up = self._consistent(tenant, consistency_token, ask)
        return {"hits": [_hit(h) for h in hits], "caught_up": caught_up}

    def context(self, caller: Caller, session_id: str, token_budget: int = 512,
                query: str | None = None, consistency_token: str | None = None) -> dict[str, Any]:
        """The session's summaries and the most relevant memories, within the budget."""
        client = self._client(caller)
        tenant = self._tenant(caller)

        def ask(token: str | None) -> dict[str, Any]:
            return client.context(session_id, query or None, token_budget=token_budget,
                                  consistency_token=token)

        pack, caught_up = self._consistent(tenant, consistency_token, ask)
        return {"text": pack_text(pack, session_id), "tokens_used": pack["tokens_used"],
                "token_budget": pack["token_budget"], "caught_up": caught_up,
                "pieces": [{"type": p["type"], "id": p["id"], "text": p["text"],
                            "tokens": p["tokens"], "source_ids": p["source_ids"]}
                           for p in pack["pieces"]]}

    def forget(self, caller: Caller, memory_id: str) -> dict[str, Any]:
        """Delete one memory of the caller's tenant, through the log."""
        client = self._client(caller)
        tenant = self._tenant(caller)
        try:
            deleted = client.delete(memory_id)
        except NotFoundError:
            raise ToolInputError(f"forget: no memory {memory_id} in this tenant") from None
        self._note_write(tenant, str(deleted["consistency_token"]))
        return {"memory_id": memory_id, "forgotten": True, "applied": bool(deleted["applied"]),
                "consistency_token": deleted["consistency_token"]}

    def summaries(self, caller: Caller, session_id: str, limit: int = 5) -> str:
        """The session's latest summaries as text (latest window first)."""
        client = self._client(caller)
        tenant = self._tenant(caller)

        def ask(token: str | None) -> dict[str, Any]:
            return client.context(session_id, None, token_budget=SUMMARY_BUDGET, k=0,
                                  max_summaries=limit, consistency_token=token)

        pack, _caught_up = self._consistent(tenant, None, ask)
        texts = [p["text"].strip() for p in pack["pieces"] if p["type"] == "summary"]
        if not texts:
            return (f"No summary of session {session_id} yet: a session's summary is written "
                    "once its time window has closed.")
        return "\n\n".join(texts)

    def close(self) -> None:
        """Deliver pending writes and close the connections."""
        with self._lock:
            producer, self._producer = self._producer, None
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
        if producer is not None:
            producer.close()

    # -- tenancy ------------------------------------------------------------------------------
    def _client(self, caller: Caller) -> MemoryClient:
        key = token_digest(caller.token)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = self._client_factory(self.url, caller.token)
            return client

    def _tenant(self, caller: Caller, *, writing: bool = False) -> str:
        """The caller's tenant, confirmed once per token by the read service, so that a write
        never lands in a tenant other than the one the caller's reads are scoped to."""
        key = token_digest(caller.token)
        with self._lock:
            known = self._tenants.get(key)
        if known is not None:
            return known
        try:
            served = self._client(caller).whoami()
        except UnavailableError:
            if writing and caller.tenant is not None:
                # A write needs only the log; the check runs on the next call that gets through.
                logger.warning("read service %s unreachable: tenant not yet confirmed", self.url)
                return caller.tenant
            raise
        except ServiceError as exc:
            if exc.status == 401:
                raise TenantMismatchError(
                    f"the read service at {self.url} does not accept this token (401): its "
                    "token list (MEMSTREAM_API_TOKENS) differs from this server's") from None
            raise
        if caller.tenant is not None and served != caller.tenant:
            raise TenantMismatchError(
                f"this token maps to one tenant here and to another at the read service "
                f"{self.url}: give both the same MEMSTREAM_API_TOKENS (and MEMSTREAM_MCP_TENANT)")
        with self._lock:
            self._tenants[key] = served
        return served

    # -- read-your-writes ---------------------------------------------------------------------
    def _note_write(self, tenant: str, token: str) -> None:
        with self._lock:
            positions = self._written.setdefault(tenant, {})
            for part in token.split(","):
                topic_partition, _, offset = part.rpartition(":")
                topic, _, partition = topic_partition.rpartition(":")
                where = (topic, int(partition))
                positions[where] = max(positions.get(where, -1), int(offset))

    def latest_write(self, tenant: str) -> str | None:
        """The consistency token covering every write this server made for the tenant."""
        with self._lock:
            positions = self._written.get(tenant)
            if not positions:
                return None
            return ",".join(f"{t}:{p}:{o}" for (t, p), o in sorted(positions.items()))

    def _consistent(self, tenant: str, token: str | None,
                       ask: Callable[[str | None], T]) -> tuple[T, bool]:
        """Ask with the caller's token, or else with the tenant's latest write; an implicit
        wait that runs out answers from what the replica has, flagged not caught up."""
        if token is not None:
            return ask(token), True
        implicit = self.latest_write(tenant)
        if implicit is None:
            return ask(None), True
        try:
            return ask(implicit), True
        except NotCaughtUpError:
            logger.info("read service not caught up with the latest write: answering without it")
            return ask(None), False


def _checked_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise ToolInputError(f"remember: field 'metadata' has {len(metadata)} entries, over the "
                             f"limit of {MAX_METADATA_ENTRIES}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ToolInputError("remember: field 'metadata' must map strings to strings")
        if not key or len(key) > MAX_METADATA_CHARS or len(value) > MAX_METADATA_CHARS:
            raise ToolInputError(f"remember: metadata entry {key[:40]!r}: key must be 1 to "
                                 f"{MAX_METADATA_CHARS} characters and value at most "
                                 f"{MAX_METADATA_CHARS}")
    return dict(metadata)


def _hit(hit: dict[str, Any]) -> dict[str, Any]:
    when = datetime.fromtimestamp(int(hit["event_time"]) / 1000, UTC)
    return {"memory_id": hit["memory_id"], "text": hit["text"],
            "similarity": round(float(hit["similarity"]), 4), "value": hit["value"],
            "kind": hit["kind"], "session": hit["session_id"],
            "occurrences": hit["occurrence_count"], "event_time": when.isoformat()}
