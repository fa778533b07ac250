"""HTTP (FastAPI, OpenAPI at /openapi.json): recall, context, memories, health, metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from streams.registry import registry_client
from streams.service.consistency import BadToken, NotCaughtUp, parse_token
from streams.service.context import Piece, pack
from streams.service.core import ReadService
from streams.service.memories import RecallFilters

_bearer = HTTPBearer(auto_error=False)


class Filters(BaseModel):
    """Restrict a recall; every field is optional."""

    session_id: str | None = None
    kinds: list[str] | None = Field(None, description="event kinds, e.g. QUERY, RESPONSE")
    time_from: datetime | None = Field(None, description="memory event time at or after")
    time_to: datetime | None = Field(None, description="memory event time at or before")
    min_value: float | None = Field(None, description="minimum value; unknown values fail it")


class RecallRequest(BaseModel):
    """A semantic recall."""

    query: str = Field(..., min_length=1, max_length=32_000)
    k: int = Field(10, ge=1, le=200)
    min_similarity: float = Field(0.0, ge=-1.0, le=1.0)
    filters: Filters | None = None
    consistency_token: str | None = Field(
        None, description="from the SDK's DeliveryResult: wait until the replica reflects it"
    )


class RecallHit(BaseModel):
    """One recalled memory."""

    memory_id: str
    text: str
    similarity: float
    value: float | None
    occurrence_count: int
    source_event_ids: list[str]
    session_id: str
    kind: str
    event_time: int = Field(..., description="epoch milliseconds")


class RecallResponse(BaseModel):
    """Hits, best first."""

    hits: list[RecallHit]
    model_id: str


class ContextRequest(BaseModel):
    """A context pack for a session."""

    session_id: str
    query: str | None = Field(None, max_length=32_000)
    token_budget: int = Field(512, ge=1, le=100_000)
    k: int = Field(20, ge=0, le=200, description="memories considered at most")
    max_summaries: int = Field(3, ge=0, le=50)
    min_similarity: float = Field(0.0, ge=-1.0, le=1.0)
    consistency_token: str | None = None


class ContextPiece(BaseModel):
    """A summary or a memory, with the event ids behind it."""

    type: str
    id: str
    text: str
    tokens: int
    source_ids: list[str]
    similarity: float | None = None


class ContextResponse(BaseModel):
    """Pieces in order (summaries, then memories by relevance) within the budget."""

    pieces: list[ContextPiece]
    tokens_used: int
    token_budget: int
    model_id: str


class Memory(BaseModel):
    """A memory as the replica holds it (without its vector)."""

    memory_id: str
    text: str
    session_id: str
    kind: str
    event_time: int
    value: float | None
    confidence: float | None
    occurrence_count: int
    source_event_ids: list[str]
    model_id: str
    scorer_version: str | None


class Deleted(BaseModel):
    """A delete that went through the log."""

    memory_id: str
    deleted: bool
    applied: bool = Field(..., description="the replica already reflects it")
    consistency_token: str


def _tenant_of(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The tenant of the request's bearer token, or 401."""
    service: ReadService = request.app.state.service
    tenant = service.tokens.tenant(creds.credentials) if creds is not None else None
    if tenant is None:
        raise HTTPException(401, "missing or unknown bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
    return tenant


Tenant = Annotated[str, Depends(_tenant_of)]


def create_app(service: ReadService) -> FastAPI:
    """The FastAPI app over a built (and started) service."""
    app = FastAPI(title="memstream read service", version="1",
                  description="Semantic recall and context packs over memories.v1")
    app.state.service = service

    @app.middleware("http")
    async def timed(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        service.metrics.latency.labels(path, request.method, str(response.status_code)).observe(
            time.perf_counter() - started)
        return response

    def wait_for(token: str | None) -> None:
        if not token:
            return
        try:
            positions = parse_token(token, service.settings.topic_prefix)
            service.gate.wait(positions)
        except BadToken as exc:
            raise HTTPException(422, str(exc)) from exc
        except NotCaughtUp as exc:
            raise HTTPException(503, {"error": str(exc), "stage": exc.stage, "lag": exc.lag},
                                headers={"Retry-After": "1"}) from exc

    def require_model() -> None:
        if service.model_error is not None:
            raise HTTPException(
                503, f"the embedding model did not load ({service.model_error}): recall and "
                     "context are unavailable until the service restarts with a loadable "
                     "MEMSTREAM_EMBEDDING_MODEL")

    @app.post("/v1/recall", response_model=RecallResponse)
    def recall(body: RecallRequest, tenant: Tenant) -> RecallResponse:
        require_model()
        wait_for(body.consistency_token)
        vector = service.embed_query(body.query)
        hits = service.replica.recall(tenant, vector, k=body.k, min_similarity=body.min_similarity,
                                      filters=_filters(body.filters))
        return RecallResponse(
            hits=[RecallHit(similarity=h.similarity, **_hit_fields(h.memory)) for h in hits],
            model_id=service.replica.model_id)

    @app.post("/v1/context", response_model=ContextResponse)
    def context(body: ContextRequest, tenant: Tenant) -> ContextResponse:
        require_model()  # even without a query: packing counts model tokens
        wait_for(body.consistency_token)
        replica = service.replica
        candidates = [
            Piece("summary", s["summary_id"], s["text"], tuple(s["event_ids"]))
            for s in replica.latest_summaries(tenant, body.session_id, body.max_summaries)
        ]
        if body.query and body.k:
            vector = service.embed_query(body.query)
            hits = replica.recall(tenant, vector, k=body.k, min_similarity=body.min_similarity)
            candidates += [Piece("memory", h.memory["memory_id"], h.memory["text"],
                                 tuple(h.memory["source_event_ids"]), h.similarity) for h in hits]
        elif body.k:
            candidates += [Piece("memory", m["memory_id"], m["text"], tuple(m["source_event_ids"]))
                           for m in replica.session_memories(tenant, body.session_id)[: body.k]]
        pieces, used = pack(candidates, body.token_budget, service.embedder.count_tokens)
        return ContextResponse(
            pieces=[ContextPiece(type=p.kind, id=p.id, text=p.text, tokens=p.tokens,
                                 source_ids=list(p.source_ids), similarity=p.similarity)
                    for p in pieces],
            tokens_used=used, token_budget=body.token_budget, model_id=replica.model_id)

    @app.get("/v1/memories/{memory_id}", response_model=Memory)
    def get_memory(memory_id: str, tenant: Tenant) -> Memory:
        found = service.replica.get(tenant, memory_id)
        if found is None:
            raise HTTPException(404, f"no memory {memory_id}")
        return Memory(**{k: found[k] for k in Memory.model_fields})

    @app.delete("/v1/memories/{memory_id}", response_model=Deleted)
    def delete_memory(memory_id: str, tenant: Tenant, response: Response) -> Deleted:
        found = service.replica.get(tenant, memory_id)
        if found is None:
            raise HTTPException(404, f"no memory {memory_id}")
        token = service.commands.delete(tenant, found)
        applied = True
        try:
            service.gate.wait(parse_token(token, service.settings.topic_prefix))
        except NotCaughtUp:
            applied = False
            response.status_code = 202
        return Deleted(memory_id=memory_id, deleted=True, applied=applied, consistency_token=token)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        ok = service.feed.alive
        body = {"status": "ok" if ok else "failing", "feed": service.feed.failed or "running"}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        checks = {"broker": _check_broker(service), "registry": _check_registry(service),
                  "index": _check_index(service), "model": _check_model(service)}
        ready = all(c["ok"] for c in checks.values())
        failing = [name for name, c in checks.items() if not c["ok"]]
        return JSONResponse({"ready": ready, "failing": failing, "checks": checks},
                            status_code=200 if ready else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        service.refresh_gauges()
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _filters(f: Filters | None) -> RecallFilters:
    if f is None:
        return RecallFilters()
    return RecallFilters(
        session_id=f.session_id,
        kinds=tuple(f.kinds) if f.kinds is not None else None,
        time_from_ms=int(f.time_from.timestamp() * 1000) if f.time_from else None,
        time_to_ms=int(f.time_to.timestamp() * 1000) if f.time_to else None,
        min_value=f.min_value,
    )


def _hit_fields(m: dict[str, Any]) -> dict[str, Any]:
    names = ("memory_id", "text", "value", "occurrence_count", "source_event_ids", "session_id",
             "kind", "event_time")
    return {n: m[n] for n in names}


def _check_broker(service: ReadService) -> dict[str, Any]:
    from streams.admin import admin_client

    topic = service.feed.topics["memories.v1"]
    try:
        meta = admin_client(service.settings).list_topics(topic, timeout=2.0)
        found = meta.topics.get(topic)
        if found is None or found.error is not None:
            return {"ok": False, "detail": f"topic {topic} missing"}
        return {"ok": True, "detail": f"{len(meta.brokers)} broker(s)"}
    except Exception as exc:  # noqa: BLE001 - any client failure means not reachable
        return {"ok": False, "detail": f"{service.settings.bootstrap_servers}: {exc}"}


def _check_registry(service: ReadService) -> dict[str, Any]:
    settings = service.settings.model_copy(update={"request_timeout_s": 2.0})
    try:
        subjects = registry_client(settings).get_subjects()
        return {"ok": True, "detail": f"{len(subjects)} subject(s)"}
    except Exception as exc:  # noqa: BLE001 - connection and registry errors alike
        return {"ok": False, "detail": f"{service.settings.schema_registry_url}: {exc}"}


def _check_index(service: ReadService) -> dict[str, Any]:
    feed = service.feed
    lag = feed.lag()
    if not feed.alive:
        return {"ok": False, "detail": f"feed stopped: {feed.failed}", "lag": lag}
    if not feed.caught_up.is_set():
        return {"ok": False, "detail": "initial catch-up not finished", "lag": lag}
    bound = service.settings.ready_max_lag
    ok = lag <= bound
    return {"ok": ok, "detail": f"lag {lag} {'<=' if ok else '>'} {bound}", "lag": lag}


def _check_model(service: ReadService) -> dict[str, Any]:
    if service.model_error is not None:
        return {"ok": False, "detail": service.model_error}
    embedder = service.embedder
    return {"ok": True, "detail": f"{embedder.model_id} (dimension {embedder.dimension})"}
